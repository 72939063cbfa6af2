import { useCallback, useEffect, useState } from "react";
import { ApiError, GENERAL, PARAM_SECTIONS, type Api, type ParamSection, type ParamsResponse, type ParamsUpdateResponse } from "../api";
import { fmtTime } from "../format";
import { changedValues, errorsFor, toDraft, type Draft } from "../params";
import { Empty, Panel } from "./Panel";

const show = (v: unknown) => (typeof v === "string" ? v : JSON.stringify(v));

export function ParamsPanel(props: { api: Api; editable: boolean; initialSection?: ParamSection }) {
  const { api, editable } = props;
  const [section, setSection] = useState<ParamSection>(props.initialSection ?? "risk");
  const [loaded, setLoaded] = useState<ParamsResponse | null>(null);
  const [draft, setDraft] = useState<Draft>({});
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [message, setMessage] = useState<string | null>(null);
  const [saved, setSaved] = useState<ParamsUpdateResponse | null>(null);
  const [busy, setBusy] = useState(false);

  const load = useCallback(
    async (s: ParamSection) => {
      setErrors({});
      setSaved(null);
      setMessage(null);
      try {
        const r = await api.getParams(s);
        setLoaded(r);
        setDraft(toDraft(r.values));
      } catch (e) {
        setLoaded(null);
        setMessage(e instanceof Error ? e.message : String(e));
      }
    },
    [api],
  );

  useEffect(() => {
    void load(section);
  }, [section, load]);

  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    if (!loaded) return;
    const values = changedValues(loaded.values, draft);
    if (Object.keys(values).length === 0) {
      setMessage("nothing changed");
      return;
    }
    setBusy(true);
    setErrors({});
    setMessage(null);
    setSaved(null);
    try {
      const r = await api.putParams(section, values);
      setSaved(r);
      setLoaded({ ...loaded, values: r.values });
      setDraft(toDraft(r.values));
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) {
        setErrors(err.fieldErrors);
        setMessage("the API refused some values: see the fields");
      } else {
        setMessage(err instanceof Error ? err.message : String(err));
      }
    } finally {
      setBusy(false);
    }
  };

  const keys = loaded ? Object.keys(loaded.values).sort() : [];
  return (
    <Panel
      testid="panel-params"
      title="Parameters"
      extra={
        <span className="tabs">
          {PARAM_SECTIONS.map((s) => (
            <button
              key={s}
              type="button"
              className={s === section ? "tab active" : "tab"}
              data-testid={`params-tab-${s}`}
              onClick={() => setSection(s)}
            >
              {s}
            </button>
          ))}
        </span>
      }
    >
      {loaded ? (
        <div className="muted">
          {loaded.changed_by ? `changed by ${loaded.changed_by} at ${fmtTime(loaded.changed_at)}` : "defaults from the config"}
        </div>
      ) : null}
      {message ? (
        <div className={errors[GENERAL] || Object.keys(errors).length ? "outcome error" : "outcome"} data-testid="params-message">
          {message}
        </div>
      ) : null}
      {errors[GENERAL] ? (
        <div className="field-error" data-testid="param-error-general">
          {errors[GENERAL]}
        </div>
      ) : null}
      {!loaded ? (
        <Empty>no parameters loaded</Empty>
      ) : (
        <form onSubmit={submit} className="params-form" data-testid="params-form">
          {keys.map((k) => {
            const v = draft[k];
            const err = errorsFor(errors, k);
            return (
              <div key={k} className={err ? "param has-error" : "param"}>
                <label htmlFor={`param-${section}-${k}`}>{k}</label>
                {typeof v === "boolean" ? (
                  <input
                    id={`param-${section}-${k}`}
                    data-testid={`param-${k}`}
                    type="checkbox"
                    checked={v}
                    disabled={!editable}
                    onChange={(e) => setDraft({ ...draft, [k]: e.target.checked })}
                  />
                ) : (
                  <input
                    id={`param-${section}-${k}`}
                    data-testid={`param-${k}`}
                    type="text"
                    value={v ?? ""}
                    readOnly={!editable}
                    onChange={(e) => setDraft({ ...draft, [k]: e.target.value })}
                  />
                )}
                {err ? (
                  <span className="field-error" data-testid={`param-error-${k}`}>
                    {err}
                  </span>
                ) : null}
              </div>
            );
          })}
          {editable ? (
            <div className="form-buttons">
              <button type="submit" data-testid="params-save" disabled={busy}>
                Save {section}
              </button>
              <button type="button" onClick={() => void load(section)}>
                Reload
              </button>
            </div>
          ) : (
            <div className="muted">read-only: editing needs the admin role</div>
          )}
        </form>
      )}
      {saved ? (
        <div className="outcome" data-testid="params-saved">
          <div>saved {saved.section}</div>
          <ul>
            {Object.entries(saved.changed ?? {}).map(([k, [o, n]]) => (
              <li key={k}>
                {k}: {show(o)} → {show(n)}
              </li>
            ))}
            {(saved.acks ?? []).map((a, i) => (
              <li key={`ack-${i}`} className={a.accepted ? "ack ok" : "ack no"}>
                {a.accepted ? "✓" : "✗"} {a.service}: {a.summary}
              </li>
            ))}
            {(saved.silent ?? []).map((s) => (
              <li key={`silent-${s}`} className="ack silent">
                … {s}: no answer
              </li>
            ))}
          </ul>
        </div>
      ) : null}
    </Panel>
  );
}
