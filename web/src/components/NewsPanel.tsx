import type { NewsItem } from "../api";
import { fmtSigned, fmtTime } from "../format";
import { sentimentColor, sentimentLabel } from "../sentiment";
import { Empty, Panel } from "./Panel";

export function NewsItemView({ n }: { n: NewsItem }) {
  const label = sentimentLabel(n.sentiment);
  return (
    <li
      data-testid="news-item"
      data-sentiment={label}
      className={`news-item news-${label}`}
      style={{ borderLeftColor: sentimentColor(n.sentiment) }}
    >
      <div className="news-meta">
        <span>{fmtTime(n.ts)}</span>
        {n.symbols.map((s) => (
          <span key={s} className="sym">
            {s}
          </span>
        ))}
        <span className="muted">{n.source}</span>
        <span className={`sentiment sentiment-${label}`} style={{ color: sentimentColor(n.sentiment) }}>
          {n.sentiment ? `${label} ${fmtSigned(n.sentiment.polarity, 2)}` : "unscored"}
        </span>
      </div>
      <div className="headline" style={{ color: sentimentColor(n.sentiment) }}>
        {n.headline}
      </div>
    </li>
  );
}

export function NewsPanel({ news }: { news: NewsItem[] }) {
  return (
    <Panel testid="panel-news" title="News">
      {news.length === 0 ? (
        <Empty>no headlines yet</Empty>
      ) : (
        <ul className="news scroll">
          {news.map((n) => (
            <NewsItemView key={n.news_id} n={n} />
          ))}
        </ul>
      )}
    </Panel>
  );
}
