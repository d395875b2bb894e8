import { useState } from "preact/hooks";
import { ApiError, api, setBearer, type ProjectInfo, type Right } from "../api";
import { href, navigate } from "../router";
import { ErrorState, Loading, useAsync } from "../ui";

const RIGHTS: Right[] = ["read", "edit", "apply", "run"];

function Share({ project }: { project: string }) {
  const [sub, setSub] = useState("");
  const [rights, setRights] = useState<Right[]>(["read", "edit"]);
  const [msg, setMsg] = useState<{ ok: boolean; text: string } | null>(null);
  const id = `share-${project}`;
  const submit = async (e: Event) => {
    e.preventDefault();
    setMsg(null);
    try {
      await api.grant(project, sub.trim(), rights);
      setMsg({ ok: true, text: `${sub.trim()} may now ${rights.join(", ")} ${project} (from their next sign-in).` });
      setSub("");
    } catch (err) {
      setMsg({ ok: false, text: (err as Error).message });
    }
  };
  return (
    <details class="share">
      <summary>Share</summary>
      <form onSubmit={submit} aria-label={`Grant rights on ${project}`}>
        <label for={`${id}-sub`}>Person (their sign-in subject)</label>
        <input id={`${id}-sub`} value={sub} required onInput={(e) => setSub((e.target as HTMLInputElement).value)} />
        <fieldset>
          <legend>Rights</legend>
          {RIGHTS.map((r) => (
            <label key={r} class="inline">
              <input
                type="checkbox"
                checked={rights.includes(r)}
                onChange={(e) =>
                  setRights((cur) => ((e.target as HTMLInputElement).checked ? [...cur, r] : cur.filter((x) => x !== r)))
                }
              />{" "}
              {r}
            </label>
          ))}
        </fieldset>
        <button type="submit" disabled={!sub.trim() || rights.length === 0}>
          Grant
        </button>
        {msg && (
          <p role={msg.ok ? "status" : "alert"} class={msg.ok ? "ok-message" : "error-message"}>
            {msg.text}
          </p>
        )}
      </form>
    </details>
  );
}

export function Projects() {
  const [list, reload] = useAsync(() => api.projects(), []);
  const [name, setName] = useState("");
  const [createError, setCreateError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const create = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setCreateError(null);
    try {
      const r = await api.createProject(name.trim());
      // The new token carries the new project's rights; the cookie does not (yet).
      if (r.token) setBearer(r.token);
      navigate(href.pipelines(r.id));
    } catch (err) {
      setCreateError(err instanceof ApiError ? err.message : String(err));
    }
    setBusy(false);
  };

  return (
    <section aria-labelledby="projects-title">
      <h1 id="projects-title">Projects</h1>
      {list.state === "loading" && !list.data && <Loading what="projects" />}
      {list.state === "error" && <ErrorState error={list.error} retry={reload} />}
      {list.data && list.data.length === 0 && <p class="empty">No projects yet: create the first one below.</p>}
      {list.data && list.data.length > 0 && (
        <ul class="project-list">
          {list.data.map((p: ProjectInfo) => (
            <li key={p.id}>
              <a href={href.pipelines(p.id)} class="project-link">
                {p.id}
              </a>
              <span class="rights" aria-label={`Your rights on ${p.id}`}>
                {p.rights.map((r) => (
                  <span class="badge" key={r}>
                    {r}
                  </span>
                ))}
              </span>
              {p.rights.includes("apply") && <Share project={p.id} />}
            </li>
          ))}
        </ul>
      )}
      <form class="create-project card" onSubmit={create} aria-labelledby="create-project-title">
        <h2 id="create-project-title">New project</h2>
        <label for="project-name">Name</label>
        <input
          id="project-name"
          name="project"
          required
          pattern="[A-Za-z_][A-Za-z0-9_]{0,62}"
          title="letters, digits and underscores, starting with a letter or underscore"
          value={name}
          onInput={(e) => setName((e.target as HTMLInputElement).value)}
        />
        <button type="submit" class="primary" disabled={busy || !name.trim()}>
          Create project
        </button>
        {createError && (
          <p class="error-message" role="alert">
            {createError}
          </p>
        )}
      </form>
    </section>
  );
}
