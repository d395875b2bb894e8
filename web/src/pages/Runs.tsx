// Runs: the run history as a table and as charts (rows and duration per run, failures in
// red), a run's log and trace when the control plane serves them.
import { useEffect, useRef, useState } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { ApiError, api, type RunDetail, type RunRow } from "../api";
import { href, navigate } from "../router";
import { ErrorState, Loading, NotAvailable, StateBadge, durationMs, fmtDuration, fmtTime, useAsync, TableHead } from "../ui";

interface Series {
  label: string;
  color: string;
  values: (number | null)[];
}

function Chart({ id, title, unit, x, series }: { id: string; title: string; unit: string; x: number[]; series: Series[] }) {
  const host = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  useEffect(() => {
    const el = host.current!;
    const width = Math.max(320, el.clientWidth || 600);
    const opts: uPlot.Options = {
      width,
      height: 220,
      title,
      scales: {
        x: {
          time: true,
          // At least an hour around the runs, from the data itself: for one point uPlot's
          // own x range is min + 86400 / ms, which with seconds (ms = 1e-3) is 2.7 years.
          range: (u, min, max) => {
            const xs = u.data[0];
            if (xs?.length) [min, max] = [xs[0], xs[xs.length - 1]];
            const span = Math.max(max - min, 3600);
            const mid = (min + max) / 2;
            return [mid - span * 0.55, mid + span * 0.55];
          },
        },
        y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.15 : 1] },
      },
      axes: [{}, { label: unit, size: 60 }],
      // The x span in seconds, for the browser tests (one run must not span years).
      hooks: { setScale: [(u, key) => void (key === "x" && (el.dataset.xSpan = String(Math.round((u.scales.x.max ?? 0) - (u.scales.x.min ?? 0)))))] },
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: s.label === "failed" ? 0 : 1.5,
          spanGaps: true,
          points: { show: true, size: s.label === "failed" ? 10 : 6, stroke: s.color, fill: s.label === "failed" ? s.color : "#fff" },
        })),
      ],
    };
    const data = [x, ...series.map((s) => s.values)] as uPlot.AlignedData;
    plot.current = new uPlot(opts, data, el);
    const ro = new ResizeObserver(() => {
      const w = Math.max(320, el.clientWidth);
      if (plot.current && Math.abs(plot.current.width - w) > 4) plot.current.setSize({ width: w, height: 220 });
    });
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [title, unit, series.length]);
  useEffect(() => {
    plot.current?.setData([x, ...series.map((s) => s.values)] as uPlot.AlignedData);
  }, [x, series]);
  const points = series.reduce((n, s) => n + s.values.filter((v) => v !== null).length, 0);
  const failed = series.find((s) => s.label === "failed")?.values.filter((v) => v !== null).length ?? 0;
  return (
    <figure class="chart" aria-labelledby={`${id}-caption`} data-chart={id} data-points={points} data-failed={failed}>
      <div ref={host} role="img" aria-label={`${title}: ${points} runs plotted, ${failed} failed`} />
      <figcaption id={`${id}-caption`} class="sr-only">
        {title}: {points} runs, {failed} failed. The table below has the same data.
      </figcaption>
    </figure>
  );
}

function RunDetails({ project, run, onClose }: { project: string; run: RunRow; onClose: () => void }) {
  const [d, setD] = useState<{ data?: RunDetail; error?: ApiError }>({});
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    ref.current?.focus();
    api.runDetail(project, run.id).then(
      (data) => setD({ data }),
      (e) => setD({ error: e instanceof ApiError ? e : new ApiError("internal", String(e)) }),
    );
  }, [run.id]);
  return (
    <div class="card run-detail" role="region" aria-label={`Run ${run.id}`} tabIndex={-1} ref={ref} onKeyDown={(e) => e.key === "Escape" && onClose()}>
      <div class="page-head">
        <h2>
          Run {run.id} · {run.pipeline}
        </h2>
        <span class="spacer" />
        <button type="button" onClick={onClose}>
          Close
        </button>
      </div>
      <dl class="facts">
        <dt>State</dt>
        <dd>
          <StateBadge state={run.state} />
        </dd>
        <dt>Node</dt>
        <dd>{run.node}</dd>
        <dt>Slot</dt>
        <dd>{run.slot}</dd>
        <dt>Assigned</dt>
        <dd>{fmtTime(run.assigned_at)}</dd>
        <dt>Finished</dt>
        <dd>{fmtTime(run.finished_at)}</dd>
        <dt>Rows</dt>
        <dd>{run.rows ?? "—"}</dd>
      </dl>
      {run.error && (
        <>
          <h3>Error</h3>
          <pre class="run-error">{run.error}</pre>
        </>
      )}
      {!d.data && !d.error && <Loading what="the run's log" />}
      {d.error?.routeMissing && <NotAvailable feature="A run's log and trace" route={`GET /api/projects/${project}/runs/${run.id}`} />}
      {d.error && !d.error.routeMissing && <ErrorState error={d.error} />}
      {d.data && (
        <>
          <h3>Log</h3>
          <pre class="run-log" tabIndex={0}>
            {d.data.log || "(empty)"}
          </pre>
          {d.data.trace && d.data.trace.length > 0 && (
            <>
              <h3>Trace</h3>
              <table>
                <TableHead cols={["Step", "Start", "Duration"]} />
                <tbody>
                  {d.data.trace.map((t, i) => (
                    <tr key={i}>
                      <td>{t.name}</td>
                      <td>+{t.start_ms} ms</td>
                      <td>{fmtDuration(t.duration_ms)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </>
          )}
        </>
      )}
    </div>
  );
}

export function Runs({ project, pipeline }: { project: string; pipeline?: string }) {
  const [runs, reload] = useAsync<RunRow[]>(() => api.runs(project, 1000), [project], 5000);
  const [open, setOpen] = useState<RunRow | null>(null);
  const all = runs.data ?? [];
  const pipelines = [...new Set(all.map((r) => r.pipeline))].sort();
  const shown = all.filter((r) => !pipeline || r.pipeline === pipeline);
  const chrono = [...shown].sort((a, b) => new Date(a.assigned_at).getTime() - new Date(b.assigned_at).getTime());
  // uPlot wants strictly increasing x: nudge equal timestamps by a millisecond.
  const x: number[] = [];
  for (const r of chrono) {
    let t = new Date(r.assigned_at).getTime() / 1000;
    if (x.length && t <= x[x.length - 1]) t = x[x.length - 1] + 0.001;
    x.push(t);
  }
  const failed = (r: RunRow) => r.state === "failed" || r.state === "lost";
  const rowsOk = chrono.map((r) => (r.state === "succeeded" ? (r.rows ?? 0) : null));
  const rowsFailed = chrono.map((r) => (failed(r) ? (r.rows ?? 0) : null));
  const durOk = chrono.map((r) => (r.state === "succeeded" ? durationMs(r.assigned_at, r.finished_at) : null)).map((v) => (v === null ? null : v / 1000));
  const durFailed = chrono.map((r) => (failed(r) ? (durationMs(r.assigned_at, r.finished_at) ?? 0) / 1000 : null));
  const key = `${project}|${pipeline}|${chrono.length}|${chrono.map((r) => r.state).join("")}`;

  return (
    <section aria-labelledby="runs-title">
      <div class="page-head">
        <h1 id="runs-title">Runs</h1>
        <label for="runs-pipeline">Pipeline</label>
        <select id="runs-pipeline" value={pipeline ?? ""} onChange={(e) => navigate(href.runs(project, (e.target as HTMLSelectElement).value || undefined), true)}>
          <option value="">all</option>
          {pipelines.map((p) => (
            <option key={p} value={p}>
              {p}
            </option>
          ))}
          {pipeline && !pipelines.includes(pipeline) && <option value={pipeline}>{pipeline}</option>}
        </select>
        <button type="button" onClick={reload}>
          Refresh
        </button>
      </div>
      {runs.state === "loading" && !runs.data && <Loading what="runs" />}
      {runs.state === "error" && <ErrorState error={runs.error} retry={reload} />}
      {runs.data && shown.length === 0 && <p class="empty">No runs{pipeline ? ` of ${pipeline}` : ""} yet. Apply, then wait for the schedule or use Run now on the Pipelines page.</p>}
      {shown.length > 0 && (
        <div class="charts" key={key}>
          <Chart
            id="rows"
            title="Rows per run"
            unit="rows"
            x={x}
            series={[
              { label: "succeeded", color: "#146c2e", values: rowsOk },
              { label: "failed", color: "#b3261e", values: rowsFailed },
            ]}
          />
          <Chart
            id="duration"
            title="Duration per run"
            unit="seconds"
            x={x}
            series={[
              { label: "succeeded", color: "#0b57d0", values: durOk },
              { label: "failed", color: "#b3261e", values: durFailed },
            ]}
          />
        </div>
      )}
      {open && <RunDetails project={project} run={open} onClose={() => setOpen(null)} />}
      {shown.length > 0 && (
        <div class="table-wrap">
          <table class="runs">
            <caption class="sr-only">Run history{pipeline ? ` of ${pipeline}` : ""}, newest first</caption>
            <TableHead cols={["Run", "Pipeline", "State", "Node", "Assigned", "Duration", "Rows", "Error"]} actions="Details" />
            <tbody>
              {[...chrono].reverse().map((r) => (
                <tr key={r.id} class={failed(r) ? "failed" : ""} data-run={r.id} data-state={r.state}>
                  <th scope="row">{r.id}</th>
                  <td>{r.pipeline}</td>
                  <td>
                    <StateBadge state={r.state} />
                  </td>
                  <td>{r.node}</td>
                  <td>{fmtTime(r.assigned_at)}</td>
                  <td>{fmtDuration(durationMs(r.assigned_at, r.finished_at))}</td>
                  <td>{r.rows ?? "—"}</td>
                  <td class="error-cell">{r.error ?? ""}</td>
                  <td>
                    <button type="button" onClick={() => setOpen(r)} aria-label={`Details of run ${r.id}`}>
                      Details
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
