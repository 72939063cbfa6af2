import { useState } from "react";
import type { Api, FillEvent, Order } from "../api";
import { fmtInt, fmtNum, fmtTime } from "../format";
import { CommandOutcomeView, useCommand } from "./command";
import { Empty, Panel } from "./Panel";

function ReplaceForm(props: { order: Order; api: Api; onDone: () => void }) {
  const [qty, setQty] = useState(String(props.order.quantity));
  const [px, setPx] = useState(props.order.limit_price == null ? "" : String(props.order.limit_price));
  const cmd = useCommand();
  const submit = () => {
    const change: { quantity?: number; limit_price?: number } = {};
    if (qty.trim() && Number(qty) !== props.order.quantity) change.quantity = Number(qty);
    if (px.trim() && Number(px) !== props.order.limit_price) change.limit_price = Number(px);
    void cmd.run(`replace ${props.order.client_order_id}`, () =>
      props.api.replaceOrder(props.order.client_order_id, change),
    );
  };
  return (
    <div className="replace-form">
      <label>
        qty <input value={qty} onChange={(e) => setQty(e.target.value)} size={6} />
      </label>
      <label>
        limit <input value={px} onChange={(e) => setPx(e.target.value)} size={8} />
      </label>
      <button disabled={cmd.busy} onClick={submit}>
        send
      </button>
      <button onClick={props.onDone}>close</button>
      <CommandOutcomeView outcome={cmd.outcome} />
    </div>
  );
}

function OrderRow(props: { order: Order; api: Api; controls: boolean; onCancel: (o: Order) => void }) {
  const o = props.order;
  const [replacing, setReplacing] = useState(false);
  return (
    <>
      <tr data-testid="order-row" data-status={o.status}>
        <td>{fmtTime(o.ts)}</td>
        <td className="sym">{o.symbol}</td>
        <td className={o.side === "BUY" ? "long" : "short"}>{o.side}</td>
        <td className="num">
          {fmtInt(o.filled)}/{fmtInt(o.quantity)}
        </td>
        <td>{o.order_type}</td>
        <td className="num">{o.limit_price == null ? "" : fmtNum(o.limit_price)}</td>
        <td className="num">{o.filled ? fmtNum(o.avg_fill_price) : ""}</td>
        <td className={`status status-${o.status.toLowerCase()}`}>{o.status}</td>
        <td className="reason" title={o.reason}>
          {o.reason}
        </td>
        {props.controls ? (
          <td className="actions">
            <button onClick={() => props.onCancel(o)}>cancel</button>
            <button onClick={() => setReplacing((r) => !r)}>replace</button>
          </td>
        ) : null}
      </tr>
      {replacing ? (
        <tr>
          <td colSpan={10}>
            <ReplaceForm order={o} api={props.api} onDone={() => setReplacing(false)} />
          </td>
        </tr>
      ) : null}
    </>
  );
}

export function OrdersPanel(props: {
  open: Order[];
  done: Order[];
  fills: FillEvent[];
  api: Api;
  controls: boolean;
  refresh: () => void;
}) {
  const cmd = useCommand(props.refresh);
  const cancel = (o: Order) =>
    void cmd.run(`cancel ${o.client_order_id}`, () => props.api.cancelOrder(o.client_order_id));
  const head = (controls: boolean) => (
    <tr>
      <th>time</th>
      <th>sym</th>
      <th>side</th>
      <th className="num">filled/qty</th>
      <th>type</th>
      <th className="num">limit</th>
      <th className="num">avg fill</th>
      <th>status</th>
      <th>reason</th>
      {controls ? <th /> : null}
    </tr>
  );
  return (
    <Panel
      testid="panel-orders"
      title="Orders & fills"
      extra={
        <span className="muted">
          {props.open.length} open · {props.done.length} done · {props.fills.length} fills
        </span>
      }
    >
      <h3>open</h3>
      {props.open.length === 0 ? (
        <Empty>no open orders</Empty>
      ) : (
        <table className="grid">
          <thead>{head(props.controls)}</thead>
          <tbody>
            {props.open.map((o) => (
              <OrderRow key={o.client_order_id} order={o} api={props.api} controls={props.controls} onCancel={cancel} />
            ))}
          </tbody>
        </table>
      )}
      <CommandOutcomeView outcome={cmd.outcome} />
      <h3>fills</h3>
      {props.fills.length === 0 ? (
        <Empty>no fills yet</Empty>
      ) : (
        <div className="scroll scroll-short">
          <table className="grid" data-testid="fills">
            <thead>
              <tr>
                <th>time</th>
                <th>sym</th>
                <th>side</th>
                <th className="num">qty</th>
                <th className="num">price</th>
                <th className="num">comm.</th>
                <th>order</th>
              </tr>
            </thead>
            <tbody>
              {props.fills.slice(0, 100).map((f) => (
                <tr key={f.exec_id || `${f.client_order_id}-${f.ts}`} data-testid="fill-row">
                  <td>{fmtTime(f.ts)}</td>
                  <td className="sym">{f.symbol}</td>
                  <td className={f.side === "BUY" ? "long" : "short"}>{f.side}</td>
                  <td className="num">{fmtInt(f.quantity)}</td>
                  <td className="num">{fmtNum(f.price)}</td>
                  <td className="num">{fmtNum(f.commission)}</td>
                  <td className="muted mono">{f.client_order_id}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <h3>today</h3>
      {props.done.length === 0 ? (
        <Empty>no finished orders</Empty>
      ) : (
        <div className="scroll">
          <table className="grid">
            <thead>{head(false)}</thead>
            <tbody>
              {props.done.slice(0, 200).map((o) => (
                <OrderRow key={o.client_order_id} order={o} api={props.api} controls={false} onCancel={cancel} />
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Panel>
  );
}
