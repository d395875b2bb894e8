// Apply: the applied versions, the diff between two, applying the document as a new version
// (a document that does not validate is refused with the reason), and rolling back.
import { useEffect, useState } from "preact/hooks";
import { ApiError, api, type Version } from "../api";
import { ErrorState, Loading, fmtTime, useAsync, TableHead } from "../ui";

function DiffView({ text }: { text: string }) {
  if (!text.trim()) return <p class="empty">No differences.</p>;
  return (
    <pre class="diff" aria-label="Unified diff" tabIndex={0}>
      {text.split("\n").map((l, i) => {
        const cls = l.startsWith("+++") || l.startsWith("---") ? "meta" : l.startsWith("+") ? "add" : l.startsWith("-") ? "del" : l.startsWith("@@") ? "hunk" : "";
        return (
          <span key={i} class={cls}>
            {l}
            {"\n"}
          </span>
        );
      })}
    </pre>
  );
}

export function Apply({ project }: { project: string }) {
  const [versions, reload] = useAsync<Version[]>(() => api.versions(project), [project]);
  const list = versions.data ?? [];
  const newest = list.length ? Math.max(...list.map((v) => v.version)) : undefined;
  const [from, setFrom] = useState<number | undefined>();
  const [to, setTo] = useState<number | undefined>();
  const [diff, setDiff] = useState<{ text?: string; error?: ApiError; loading?: boolean }>({});
  const [note, setNote] = useState("");
  const [result, setResult] = useState<{ ok: boolean; text: string } | null>(null);
  const [busy, setBusy] = useState(false);

  // Default comparison, again whenever a version is added: the newest against the one before.
  useEffect(() => {
    if (newest === undefined) return;
    const sorted = list.map((v) => v.version).sort((a, b) => a - b);
    setTo(newest);
    setFrom(sorted.length > 1 ? sorted[sorted.length - 2] : newest);
  }, [newest]);

  useEffect(() => {
    if (from === undefined || to === undefined) return;
    let live = true;
    setDiff({ loading: true });
    api.diff(project, from, to).then(
      (text) => live && setDiff({ text }),
      (e) => live && setDiff({ error: e instanceof ApiError ? e : new ApiError("internal", String(e)) }),
    );
    return () => {
      live = false;
    };
  }, [project, from, to]);

  const apply = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setResult(null);
    try {
      const r = await api.apply(project, note);
      setResult({
        ok: true,
        text: r.changed ? `Applied: version ${r.version}. Nodes pick it up on their next heartbeat.` : `Nothing changed: version ${r.version} is already the document.`,
      });
      setNote("");
      reload();
    } catch (err) {
      setResult({ ok: false, text: (err as Error).message });
    }
    setBusy(false);
  };

  const rollback = async (v: number) => {
    if (!confirm(`Roll back ${project} to version ${v}? It is applied again as a new version and written back into the shared document.`)) return;
    setResult(null);
    try {
      const r = await api.rollback(project, v);
      setResult({ ok: true, text: `Rolled back: version ${v} is applied again as version ${r.version}.` });
      reload();
    } catch (err) {
      setResult({ ok: false, text: `Rollback failed: ${(err as Error).message}` });
    }
  };

  return (
    <section aria-labelledby="apply-title">
      <h1 id="apply-title">Apply</h1>
      <form class="card apply-form" onSubmit={apply} aria-labelledby="apply-form-title">
        <h2 id="apply-form-title">Apply the shared document</h2>
        <p class="help">Validates the document as a manifest and, if it changed, records it as a new version that the nodes run.</p>
        <label for="apply-note">Note (what changed, why)</label>
        <input id="apply-note" value={note} onInput={(e) => setNote((e.target as HTMLInputElement).value)} />
        <button type="submit" class="primary" disabled={busy} id="apply-button">
          {busy ? "Applying…" : "Apply"}
        </button>
      </form>
      {result &&
        (result.ok ? (
          <p class="ok-message" role="status" data-apply="ok">
            {result.text}
          </p>
        ) : (
          <div class="error-state" role="alert" data-apply="error">
            <h2>Not applied</h2>
            <p class="error-message">{result.text}</p>
          </div>
        ))}

      <h2>Versions</h2>
      {versions.state === "loading" && !versions.data && <Loading what="versions" />}
      {versions.state === "error" && <ErrorState error={versions.error} retry={reload} />}
      {versions.data && list.length === 0 && <p class="empty">Nothing applied yet.</p>}
      {list.length > 0 && (
        <div class="table-wrap">
          <table class="versions">
            <caption class="sr-only">Applied versions of {project}</caption>
            <TableHead cols={["Version", "Applied", "By", "Note"]} actions="Actions" />
            <tbody>
              {[...list]
                .sort((a, b) => b.version - a.version)
                .map((v) => (
                  <tr key={v.version} class={v.current ? "current" : ""}>
                    <th scope="row">
                      {v.version}
                      {v.current && <span class="badge">current</span>}
                    </th>
                    <td>{fmtTime(v.applied_at)}</td>
                    <td>{v.applied_by}</td>
                    <td>{v.note}</td>
                    <td>
                      {!v.current && (
                        <button type="button" onClick={() => rollback(v.version)} aria-label={`Roll back to version ${v.version}`}>
                          Roll back to {v.version}
                        </button>
                      )}
                    </td>
                  </tr>
                ))}
            </tbody>
          </table>
        </div>
      )}
      {list.length > 0 && (
        <section aria-labelledby="diff-title">
          <h2 id="diff-title">Diff</h2>
          <div class="inline-form">
            <label for="diff-from">From version</label>
            <select id="diff-from" value={from} onChange={(e) => setFrom(Number((e.target as HTMLSelectElement).value))}>
              {list.map((v) => (
                <option key={v.version} value={v.version}>
                  {v.version}
                </option>
              ))}
            </select>
            <label for="diff-to">to version</label>
            <select id="diff-to" value={to} onChange={(e) => setTo(Number((e.target as HTMLSelectElement).value))}>
              {list.map((v) => (
                <option key={v.version} value={v.version}>
                  {v.version}
                </option>
              ))}
            </select>
          </div>
          {diff.loading && <Loading what="the diff" />}
          {diff.error && <ErrorState error={diff.error} />}
          {diff.text !== undefined && <DiffView text={diff.text} />}
        </section>
      )}
    </section>
  );
}
