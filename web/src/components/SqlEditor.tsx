// A CodeMirror 6 SQL editor. Bound to a LoroText (the pipeline's `sql`), local edits become
// Loro inserts/deletes (UTF-16 positions, as CodeMirror's) committed at once, and remote
// edits arrive as Loro text deltas applied to the editor directly, without a re-render.
// Unbound (the query console), it starts from `value` and reports changes through
// onChange; it does not follow later `value` changes (an effect doing so would run after
// paint with a stale value and drop keystrokes typed meanwhile).
import { useEffect, useRef } from "preact/hooks";
import { EditorState, Annotation, type ChangeSpec } from "@codemirror/state";
import {
  EditorView,
  keymap,
  lineNumbers,
  highlightActiveLine,
  drawSelection,
  placeholder as placeholderExt,
} from "@codemirror/view";
import { defaultKeymap, history, historyKeymap } from "@codemirror/commands";
import { sql, PostgreSQL } from "@codemirror/lang-sql";
import { syntaxHighlighting, defaultHighlightStyle, bracketMatching } from "@codemirror/language";
import type { LoroDoc, LoroText } from "loro-crdt";

const remote = Annotation.define<boolean>();

export interface SqlEditorProps {
  id: string;
  label: string;
  describedBy?: string;
  invalid?: boolean;
  /** Bound mode: the shared text. */
  doc?: LoroDoc;
  text?: LoroText;
  /** Unbound mode: the initial text. */
  value?: string;
  onChange?: (v: string) => void;
  onFocus?: () => void;
  onBlur?: () => void;
  /** Ctrl/Cmd-Enter. */
  onSubmit?: () => void;
  readOnly?: boolean;
  placeholder?: string;
  minLines?: number;
}

export function SqlEditor(props: SqlEditorProps) {
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  const cbs = useRef(props);
  cbs.current = props;

  useEffect(() => {
    const { text } = props;
    const initial = text ? text.toString() : (props.value ?? "");
    const extensions = [
      lineNumbers(),
      history(),
      drawSelection(),
      highlightActiveLine(),
      bracketMatching(),
      sql({ dialect: PostgreSQL, upperCaseKeywords: true }),
      syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
      EditorView.lineWrapping,
      keymap.of([
        { key: "Mod-Enter", run: () => (cbs.current.onSubmit?.(), true) },
        // No Tab binding: Tab moves the focus on, as everywhere else on the page.
        ...defaultKeymap,
        ...historyKeymap,
      ]),
      EditorView.contentAttributes.of({
        "aria-label": props.label,
        id: props.id,
        ...(props.describedBy ? { "aria-describedby": props.describedBy } : {}),
        "aria-multiline": "true",
      }),
      EditorState.readOnly.of(!!props.readOnly),
      EditorView.editable.of(!props.readOnly),
      EditorView.domEventHandlers({
        focus: () => void cbs.current.onFocus?.(),
        blur: () => void cbs.current.onBlur?.(),
      }),
      EditorView.updateListener.of((u) => {
        if (!u.docChanged) return;
        if (u.transactions.some((t) => t.annotation(remote))) return;
        const t = cbs.current.text;
        const d = cbs.current.doc;
        if (t && d) {
          // Apply from the end so earlier positions stay valid.
          const changes: [number, number, string][] = [];
          u.changes.iterChanges((fromA, toA, _fromB, _toB, inserted) => {
            changes.push([fromA, toA, inserted.toString()]);
          });
          for (let i = changes.length - 1; i >= 0; i--) {
            const [from, to, ins] = changes[i];
            if (to > from) t.delete(from, to - from);
            if (ins) t.insert(from, ins);
          }
          d.commit({ origin: "sql-editor" });
        } else {
          cbs.current.onChange?.(u.state.doc.toString());
        }
      }),
    ];
    if (props.placeholder) extensions.push(placeholderExt(props.placeholder));
    if (props.minLines) {
      extensions.push(EditorView.theme({ ".cm-content, .cm-gutter": { minHeight: `${props.minLines * 1.4}em` } }));
    }
    const v = new EditorView({ parent: host.current!, state: EditorState.create({ doc: initial, extensions }) });
    view.current = v;

    let unsub: (() => void) | undefined;
    if (text) {
      unsub = text.subscribe((batch) => {
        if (batch.by === "local") return;
        const specs: ChangeSpec[] = [];
        for (const ev of batch.events) {
          if (ev.diff.type !== "text") continue;
          let pos = 0;
          for (const d of ev.diff.diff) {
            if (d.retain !== undefined) pos += d.retain;
            else if (d.delete !== undefined) {
              specs.push({ from: pos, to: pos + d.delete });
              pos += d.delete;
            } else if (d.insert !== undefined) {
              specs.push({ from: pos, insert: d.insert });
            }
          }
        }
        if (specs.length) {
          v.dispatch({ changes: specs, annotations: [remote.of(true)] });
        }
        // Belt and braces: if the editor and the text ever disagree, the text wins.
        const want = text.toString();
        if (v.state.doc.length !== want.length || v.state.doc.toString() !== want) {
          v.dispatch({ changes: { from: 0, to: v.state.doc.length, insert: want }, annotations: [remote.of(true)] });
        }
      });
    }
    return () => {
      unsub?.();
      v.destroy();
      view.current = null;
    };
    // Rebuild when bound to another text.
  }, [props.text, props.doc, props.readOnly]);

  return <div class={`sql-editor${props.invalid ? " invalid" : ""}`} ref={host} data-editor-id={props.id} />;
}
