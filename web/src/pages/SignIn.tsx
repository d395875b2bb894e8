import { useState } from "preact/hooks";
import { api, setBearer, signInUrl } from "../api";
import { navigate } from "../router";

/** Sign-in through the control plane's OIDC redirect (GET /auth/login?return_to=...). */
export function SignIn({ reason, next }: { reason?: string; next?: string }) {
  const [problem, setProblem] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [token, setToken] = useState("");
  const returnTo = next && next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/signin") ? next : "/projects";

  const signIn = async () => {
    setBusy(true);
    setProblem(null);
    const url = signInUrl(returnTo);
    // Check first that sign-in is configured: a control plane without --oidc-issuer answers
    // an error, which would otherwise replace the app with raw JSON.
    try {
      const res = await fetch(url, { redirect: "manual", credentials: "same-origin" });
      if (res.type === "opaqueredirect" || (res.status >= 300 && res.status < 400)) {
        location.assign(url);
        return;
      }
      let msg = `HTTP ${res.status}`;
      try {
        const j = await res.json();
        if (j?.error) msg = j.error;
      } catch {
        /* keep the status */
      }
      setProblem(
        res.status >= 502 && res.status <= 504
          ? `The control plane at ${location.origin} does not answer (HTTP ${res.status}).`
          : `Sign-in is not available: ${msg}`,
      );
    } catch (e) {
      setProblem(`The control plane at ${location.origin} cannot be reached (${(e as Error)?.message ?? e}).`);
    }
    setBusy(false);
  };

  const useToken = async (e: Event) => {
    e.preventDefault();
    setProblem(null);
    setBearer(token.trim());
    try {
      await api.projects();
      navigate(returnTo, true);
    } catch (err) {
      setBearer(null);
      setProblem(`That token does not sign in: ${(err as Error).message}`);
    }
  };

  return (
    <section class="signin" aria-labelledby="signin-title">
      <h1 id="signin-title">Sign in to Hakiri</h1>
      {reason === "expired" && (
        <p class="banner banner-warn" role="alert" data-reason="expired">
          Your session expired, sign in again.
        </p>
      )}
      {reason === "signed-out" && (
        <p class="banner" role="status">
          You are signed out.
        </p>
      )}
      <p>Sign in with your team's identity provider to edit pipelines, apply them and watch their runs.</p>
      <button type="button" class="primary" onClick={signIn} disabled={busy} id="signin-button">
        {busy ? "Redirecting…" : "Sign in"}
      </button>
      {problem && (
        <p class="error-message" role="alert">
          {problem}
        </p>
      )}
      <details class="token-signin">
        <summary>Use a token instead</summary>
        <form onSubmit={useToken}>
          <label for="token-input">
            Token (<code>hakiri control token --sub NAME</code> on the control machine)
          </label>
          <input
            id="token-input"
            type="password"
            autocomplete="off"
            value={token}
            onInput={(e) => setToken((e.target as HTMLInputElement).value)}
          />
          <button type="submit" disabled={!token.trim()}>
            Use this token
          </button>
          <p class="hint">Kept for this tab only.</p>
        </form>
      </details>
    </section>
  );
}
