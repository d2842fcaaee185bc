// Small formatting and drawing helpers shared by the page's views (no state, no network).
import { splitPath } from './protocol.js';

/** Creates an element: el('div', {class: 'x', 'data-testid': 'y'}, child, 'text', ...). */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k === 'style') e.style.cssText = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** Replaces `parent`'s children with `children` only when the text differs (no flicker). */
export function setText(node, text) {
  const t = String(text);
  if (node && node.textContent !== t) node.textContent = t;
}

const nf = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const nf1 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const nf2 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

/** 1234567 -> "1,234,567"; non-numbers as JSON. */
export function formatNumber(v) {
  if (typeof v !== 'number') return v === null || v === undefined ? '—' : JSON.stringify(v);
  if (Number.isInteger(v)) return nf.format(v);
  return Math.abs(v) >= 100 ? nf.format(v) : nf2.format(v);
}

/** A per-second rate: "12.3", "0.25", "—". */
export function formatRate(v) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '—';
  return Math.abs(v) >= 100 ? nf.format(v) : Math.abs(v) >= 10 ? nf1.format(v) : nf2.format(v);
}

/** A duration in ms: "850 ms", "4.2 s", "3 min", "2 h". */
export function formatDuration(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '—';
  const a = Math.abs(ms);
  if (a < 1000) return `${Math.round(ms)} ms`;
  if (a < 60000) return `${nf1.format(ms / 1000)} s`;
  if (a < 3600000) return `${Math.floor(ms / 60000)} min`;
  if (a < 86400000) return `${nf1.format(ms / 3600000)} h`;
  return `${nf1.format(ms / 86400000)} d`;
}

/** "4.2 s ago" relative to `now` (both ms). */
export function ago(ts, now) {
  if (typeof ts !== 'number') return '—';
  const d = now - ts;
  if (d < 0 && d > -1000) return 'just now';
  return d >= 0 ? `${formatDuration(d)} ago` : `in ${formatDuration(-d)}`;
}

/** Wall-clock time of day of an epoch-ms value, e.g. "14:03:22.418". */
export function clock(ts) {
  if (typeof ts !== 'number') return '—';
  const d = new Date(ts);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** Compact JSON of a value for a one-line display. */
export function compactJson(v, max = 400) {
  const s = JSON.stringify(v);
  if (s === undefined) return 'null';
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** A path as spans: muted leading segments, bold last one. */
export function pathSpans(path) {
  let segs;
  try {
    segs = splitPath(path);
  } catch {
    segs = [path];
  }
  const frag = document.createDocumentFragment();
  segs.forEach((s, i) => {
    if (i) frag.append(el('span', { class: 'path-seg', text: ' › ' }));
    frag.append(el('span', { class: i === segs.length - 1 ? 'path-last' : 'path-seg', text: s }));
  });
  return frag;
}

const PALETTE = ['#3d6bff', '#16a34a', '#d97706', '#db2777', '#0891b2', '#7c3aed', '#65a30d', '#ea580c', '#0d9488', '#9333ea', '#ca8a04', '#2563eb'];

/** A stable colour for a node id (the same in the node tile and in its queue section). */
export function nodeColor(id) {
  let h = 2166136261;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 16777619);
  return PALETTE[(h >>> 0) % PALETTE.length];
}

const SVG = 'http://www.w3.org/2000/svg';

/** Draws (or redraws) a sparkline of `values` (numbers or nulls) into an <svg class="spark">. */
export function sparkline(svg, values, { width = 120, height = 22 } = {}) {
  const pts = values.map((v, i) => [i, v]).filter(([, v]) => typeof v === 'number' && Number.isFinite(v));
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  let line = svg.querySelector('polyline');
  let area = svg.querySelector('path');
  if (!line) {
    area = document.createElementNS(SVG, 'path');
    line = document.createElementNS(SVG, 'polyline');
    svg.append(area, line);
  }
  if (pts.length < 2) {
    line.setAttribute('points', '');
    area.setAttribute('d', '');
    return;
  }
  const n = Math.max(values.length - 1, 1);
  let lo = Math.min(...pts.map(([, v]) => v));
  let hi = Math.max(...pts.map(([, v]) => v));
  if (lo > 0) lo = 0;
  if (hi === lo) hi = lo + 1;
  const x = (i) => (i / n) * width;
  const y = (v) => height - 1.5 - ((v - lo) / (hi - lo)) * (height - 3);
  const coords = pts.map(([i, v]) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
  line.setAttribute('points', coords.join(' '));
  area.setAttribute('d', `M${x(pts[0][0]).toFixed(1)},${height} L${coords.join(' L')} L${x(pts[pts.length - 1][0]).toFixed(1)},${height} Z`);
}

export function svgEl(cls) {
  const s = document.createElementNS(SVG, 'svg');
  s.setAttribute('class', cls);
  return s;
}
