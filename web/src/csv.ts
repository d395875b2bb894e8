// Query results as table cells and as CSV (RFC 4180: CRLF, quotes doubled).
import type { QueryResult } from "./api";

export function columnNames(r: QueryResult): string[] {
  return r.columns.map((c) => (typeof c === "string" ? c : c.name));
}

export function rowValues(_r: QueryResult, row: unknown[] | Record<string, unknown>, names: string[]): unknown[] {
  return Array.isArray(row) ? row : names.map((n) => (row as Record<string, unknown>)[n]);
}

export function cell(v: unknown): string {
  if (v === null || v === undefined) return "";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

export function toCsv(r: QueryResult): string {
  const names = columnNames(r);
  const esc = (s: string) => (/[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
  const lines = [names.map(esc).join(",")];
  for (const row of r.rows) lines.push(rowValues(r, row, names).map((v) => esc(cell(v))).join(","));
  return `${lines.join("\r\n")}\r\n`;
}

