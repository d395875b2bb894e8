import { useEffect, useState } from "preact/hooks";
import { ApiError, api, onReachability, onUnauthenticated, setBearer } from "./api";
import { href, navigate, useRoute, type Route } from "./router";
import { loadMe, nameFromServer, setDisplayName, useDisplayName } from "./session";
import { ErrorState, Loading, useModule } from "./ui";
import { SignIn } from "./pages/SignIn";
import { Projects } from "./pages/Projects";
import { Apply } from "./pages/Apply";
import { Tables } from "./pages/Tables";

// Pages that need the shared document (Loro's WASM), CodeMirror or uPlot are split out and
// loaded when first opened.
const loadDocPages = () => import("./pages/docpages");
const loadRuns = () => import("./pages/Runs");
const loadQuery = () => import("./pages/Query");

function Lazy<T>({ load, render, what }: { load: () => Promise<T>; render: (m: T) => preact.JSX.Element; what: string }) {
  const { mod, error } = useModule(load);
  if (error) return <ErrorState error={error} retry={() => location.reload()} />;
  if (!mod) return <Loading what={what} />;
  return render(mod);
}

const SECTIONS: [Route["page"], string, (p: string) => string][] = [
  ["pipelines", "Pipelines", href.pipelines],
  ["sources", "Sources", href.sources],
  ["apply", "Apply", href.apply],
  ["runs", "Runs", href.runs],
  ["query", "Query", href.query],
  ["tables", "Tables", href.tables],
];

function Header({ route }: { route: Route }) {
  const name = useDisplayName();
  const project = "project" in route ? route.project : undefined;
  const signOut = async () => {
    setBearer(null);
    try {
      await api.logout();
    } catch {
      /* the cookie goes anyway when it expires */
    }
    navigate(href.signin("signed-out"));
  };
  return (
    <header class="top">
      <a class="brand" href="/projects" aria-label="Hakiri: all projects">
        Hakiri
      </a>
      {project && (
        <>
          <span class="crumb" aria-hidden="true">
            /
          </span>
          <a class="crumb project-name" href={href.pipelines(project)}>
            {project}
          </a>
          <nav aria-label="Project sections" class="sections">
            {SECTIONS.map(([page, label, to]) => {
              const active = route.page === page || (page === "pipelines" && route.page === "editor");
              return (
                <a key={page} href={to(project)} aria-current={active ? "page" : undefined} class={active ? "active" : ""}>
                  {label}
                </a>
              );
            })}
          </nav>
        </>
      )}
      <span class="spacer" />
      {route.page !== "signin" && (
        <>
          <button
            type="button"
            class="who"
            title="Your name as the others editing with you see it"
            aria-label={`Signed in as ${name}${nameFromServer() ? "" : ": change the name shown to others"}`}
            onClick={() => {
              if (nameFromServer()) return;
              const n = prompt("Your name, as the others editing with you see it", name);
              if (n !== null) setDisplayName(n);
            }}
          >
            {name}
          </button>
          <button type="button" class="link" onClick={signOut}>
            Sign out
          </button>
        </>
      )}
    </header>
  );
}

export function App() {
  const route = useRoute();
  const [unreachable, setUnreachable] = useState(false);

  useEffect(() => {
    const off1 = onUnauthenticated((e: ApiError) => {
      if (location.pathname === "/signin") return;
      const next = location.pathname + location.search;
      navigate(href.signin(e.neverSignedIn ? undefined : "expired", next), true);
    });
    const off2 = onReachability((ok) => setUnreachable(!ok));
    void loadMe();
    return () => {
      off1();
      off2();
    };
  }, []);

  useEffect(() => {
    const titles: Record<string, string> = {
      signin: "Sign in",
      projects: "Projects",
      pipelines: "Pipelines",
      editor: "Pipeline editor",
      sources: "Sources",
      apply: "Apply",
      runs: "Runs",
      query: "Query console",
      tables: "Tables",
      notfound: "Not found",
    };
    const p = "project" in route ? ` · ${route.project}` : "";
    const pipeline = route.page === "editor" ? ` · ${route.pipeline}` : "";
    document.title = `${titles[route.page]}${pipeline}${p} · Hakiri`;
    document.body.dataset.page = route.page;
  }, [route]);

  let page: preact.JSX.Element;
  switch (route.page) {
    case "signin":
      page = <SignIn reason={route.reason} next={route.next} />;
      break;
    case "projects":
      page = <Projects />;
      break;
    case "pipelines":
    case "editor":
    case "sources":
      page = <Lazy key="doc" load={loadDocPages} what="the editor" render={(m) => <m.DocPage route={route} />} />;
      break;
    case "apply":
      page = <Apply project={route.project} />;
      break;
    case "runs":
      page = <Lazy key="runs" load={loadRuns} what="runs" render={(m) => <m.Runs project={route.project} pipeline={route.pipeline} />} />;
      break;
    case "query":
      page = <Lazy key="query" load={loadQuery} what="the query console" render={(m) => <m.Query project={route.project} />} />;
      break;
    case "tables":
      page = <Tables project={route.project} />;
      break;
    default:
      page = (
        <div class="error-state" role="alert">
          <h2>No such page</h2>
          <p>
            <code>{route.path}</code> is not a page of this app. <a href="/projects">Go to the projects</a>.
          </p>
        </div>
      );
  }

  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <Header route={route} />
      {unreachable && (
        <div class="banner banner-error" role="alert" data-banner="unreachable">
          The control plane at {location.origin} is unreachable. What you see may be out of date; edits to the shared
          document are kept and sent when it is back.{" "}
          <button type="button" onClick={() => location.reload()}>
            Reload
          </button>
        </div>
      )}
      <main id="main" tabIndex={-1}>
        {page}
      </main>
    </>
  );
}
