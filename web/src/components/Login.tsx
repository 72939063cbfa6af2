import { useState } from "react";
import { ApiError, createApi, type WhoAmI } from "../api";

/** Asks for an API token and checks it with GET /api/whoami before keeping it. */
export function Login(props: {
  onLogin: (token: string, me: WhoAmI) => void;
  message?: string | null;
  fetchImpl?: typeof fetch;
}) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    const t = token.trim();
    if (!t) {
      setError("enter a token");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const api = createApi({ getToken: () => t, fetchImpl: props.fetchImpl });
      const me = await api.whoami();
      props.onLogin(t, me);
    } catch (err) {
      setError(
        err instanceof ApiError && err.status === 401
          ? "invalid token"
          : err instanceof Error
            ? err.message
            : String(err),
      );
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="login-wrap">
      <form className="login" onSubmit={submit} data-testid="login-form">
        <h1>tradefleet</h1>
        <label htmlFor="token">API token</label>
        <input
          id="token"
          data-testid="token"
          type="password"
          autoComplete="current-password"
          value={token}
          onChange={(e) => setToken(e.target.value)}
          autoFocus
        />
        <button type="submit" data-testid="login" disabled={busy}>
          {busy ? "checking…" : "Log in"}
        </button>
        {error || props.message ? (
          <div className="login-error" data-testid="login-error">
            {error ?? props.message}
          </div>
        ) : null}
      </form>
    </div>
  );
}
