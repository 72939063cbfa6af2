import type { ReactNode } from "react";

export function Panel(props: {
  testid: string;
  title: string;
  extra?: ReactNode;
  className?: string;
  children: ReactNode;
}) {
  return (
    <section className={`panel ${props.className ?? ""}`} data-testid={props.testid}>
      <header className="panel-head">
        <h2>{props.title}</h2>
        {props.extra ? <div className="panel-extra">{props.extra}</div> : null}
      </header>
      <div className="panel-body">{props.children}</div>
    </section>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <div className="empty">{children}</div>;
}
