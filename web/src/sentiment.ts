import type { NewsItem, Sentiment, SentimentLabel } from "./api";

export const SENTIMENT_COLORS: Record<SentimentLabel, string> = {
  positive: "#1f9d55",
  negative: "#d64545",
  neutral: "#8a94a6",
};

/** The label a headline is shown with: its sentiment's, "neutral" until it has one. */
export function sentimentLabel(s: Sentiment | null | undefined): SentimentLabel {
  const label = s?.label;
  return label === "positive" || label === "negative" ? label : "neutral";
}

export function sentimentClass(s: Sentiment | null | undefined): string {
  return `news-${sentimentLabel(s)}`;
}

export function sentimentColor(s: Sentiment | null | undefined): string {
  return SENTIMENT_COLORS[sentimentLabel(s)];
}

export function newsLabel(n: NewsItem): SentimentLabel {
  return sentimentLabel(n.sentiment);
}
