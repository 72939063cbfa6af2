import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { ApiError, createApi, loadToken, saveToken, type WhoAmI } from "./api";
import { Login } from "./components/Login";
import { Dashboard } from "./Dashboard";

export function App() {
  const [token, setToken] = useState<string | null>(() => loadToken());
  const [me, setMe] = useState<WhoAmI | null>(null);
  const [checking, setChecking] = useState<boolean>(() => !!loadToken());
  const [loginMessage, setLoginMessage] = useState<string | null>(null);
  const [rateLimited, setRateLimited] = useState(false);
  const tokenRef = useRef(token);
  tokenRef.current = token;
  const rlTimer = useRef<ReturnType<typeof setTimeout> | null>(null);

  const logout = useCallback((message: string | null = null) => {
    saveToken(null);
    setToken(null);
    setMe(null);
    setChecking(false);
    setLoginMessage(message);
  }, []);
  const onLogoutClick = useCallback(() => logout(null), [logout]);

  const api = useMemo(
    () =>
      createApi({
        getToken: () => tokenRef.current,
        onUnauthorized: () => logout("session expired or token revoked: log in again"),
        onRateLimited: () => {
          setRateLimited(true);
          if (rlTimer.current) clearTimeout(rlTimer.current);
          rlTimer.current = setTimeout(() => setRateLimited(false), 3000);
        },
      }),
    [logout],
  );

  // a token kept from an earlier visit: check it once
  useEffect(() => {
    if (!token || me) return;
    let alive = true;
    api
      .whoami()
      .then((who) => alive && setMe(who))
      .catch((e) => {
        if (!alive) return;
        if (!(e instanceof ApiError && e.status === 401)) {
          setLoginMessage(e instanceof Error ? e.message : String(e));
          saveToken(null);
          setToken(null);
        }
      })
      .finally(() => alive && setChecking(false));
    return () => {
      alive = false;
    };
  }, []);

  const onLogin = useCallback((t: string, who: WhoAmI) => {
    saveToken(t);
    tokenRef.current = t;
    setToken(t);
    setMe(who);
    setLoginMessage(null);
  }, []);

  return (
    <>
      {rateLimited ? (
        <div className="rate-limited" role="status" data-testid="rate-limited">
          rate limited
        </div>
      ) : null}
      {checking ? (
        <div className="login-wrap">checking token…</div>
      ) : token && me ? (
        <Dashboard api={api} me={me} token={token} onLogout={onLogoutClick} />
      ) : (
        <Login onLogin={onLogin} message={loginMessage} />
      )}
    </>
  );
}
