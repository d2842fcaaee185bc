// The state explorer: the merged state as a tree (from GET /v1/state?prefix=, whose leaves carry
// the stamp of the write that set them: who wrote each value and when), a search over paths and
// values, and a detail pane with the blame route's answer when the observer has it.
import { joinPath, splitPath } from './protocol.js';
import { clock, compactJson, el, formatNumber, setText } from './format.js';

const LIMIT = 20000;
const MAX_MATCHES = 300;

export class StateExplorer {
  constructor({ tree, detail, search, info, reload, fetchJson }) {
    this.treeEl = tree;
    this.detailEl = detail;
    this.searchEl = search;
    this.infoEl = info;
    this.fetchJson = fetchJson;
    this.leaves = [];
    this.root = null;
    this.open = new Set(['']); // dotted paths of open branches
    this.selected = null;
    this.loading = false;
    search.addEventListener('input', () => this.render());
    reload.addEventListener('click', () => this.load());
  }

  async load() {
    if (this.loading) return;
    this.loading = true;
    setText(this.infoEl, 'loading…');
    try {
      const r = await this.fetchJson(`/v1/state?prefix=&limit=${LIMIT}`);
      if (!r.ok) {
        setText(this.infoEl, `could not load the state: ${r.error}`);
        return;
      }
      this.leaves = Array.isArray(r.body.leaves) ? r.body.leaves : [];
      this.root = buildTree(this.leaves);
      const more = r.body.truncated ? ` (first ${LIMIT})` : '';
      setText(this.infoEl, `${formatNumber(this.leaves.length)} values${more} · loaded ${clock(Date.now())}`);
      this.render();
      if (this.selected) {
        const leaf = this.leaves.find((l) => l.path === this.selected);
        if (leaf) this.showDetail(leaf);
      }
    } finally {
      this.loading = false;
    }
  }

  render() {
    const q = this.searchEl.value.trim().toLowerCase();
    const frag = document.createDocumentFragment();
    if (!this.root) {
      frag.append(el('div', { class: 'empty-note', text: 'No state loaded yet.' }));
    } else if (q) {
      const matches = [];
      for (const leaf of this.leaves) {
        const v = compactJson(leaf.value, 200);
        if (leaf.path.toLowerCase().includes(q) || v.toLowerCase().includes(q)) {
          matches.push(leaf);
          if (matches.length >= MAX_MATCHES) break;
        }
      }
      if (!matches.length) frag.append(el('div', { class: 'empty-note', text: `Nothing matches “${q}”.` }));
      for (const leaf of matches) frag.append(this.#leafRow(leaf, leaf.path, q));
    } else if (!this.root.kids.size) {
      frag.append(el('div', { class: 'empty-note', text: 'The state is empty.' }));
    } else {
      this.#renderKids(this.root, [], frag);
    }
    const top = this.treeEl.scrollTop;
    this.treeEl.replaceChildren(frag);
    this.treeEl.scrollTop = top;
  }

  #renderKids(node, prefix, into) {
    const keys = [...node.kids.keys()].sort(naturalCompare);
    for (const key of keys) {
      const kid = node.kids.get(key);
      const segs = [...prefix, key];
      if (kid.leaf && !kid.kids.size) {
        into.append(this.#leafRow(kid.leaf, key, ''));
        continue;
      }
      const dotted = joinPath(segs);
      const det = el('details', { 'data-path': dotted });
      const summary = el('summary', {}, el('span', { class: 'key', text: key }), ' ', el('span', { class: 'count', text: `${kid.size}` }));
      det.append(summary);
      const kids = el('div', { class: 'kids', role: 'group' });
      det.append(kids);
      if (this.open.has(dotted)) {
        det.open = true;
        this.#renderKids(kid, segs, kids);
      }
      det.addEventListener('toggle', () => {
        if (det.open) {
          this.open.add(dotted);
          if (!kids.childNodes.length) this.#renderKids(kid, segs, kids);
        } else {
          this.open.delete(dotted);
        }
      });
      into.append(det);
    }
  }

  #leafRow(leaf, label, q) {
    const v = compactJson(leaf.value, 160);
    const row = el('div', { class: `leaf${this.selected === leaf.path ? ' selected' : ''}`, role: 'treeitem', 'data-testid': 'explorer-leaf', 'data-path': leaf.path });
    row.append(highlight('span', 'key', label, q), highlight('span', `val${typeof leaf.value === 'string' ? ' str' : ''}`, v, q));
    if (leaf.stamp) row.append(el('span', { class: 'who', text: `${leaf.stamp.blade} · ${clock(leaf.stamp.ts)}` }));
    row.addEventListener('click', () => {
      this.selected = leaf.path;
      for (const s of this.treeEl.querySelectorAll('.leaf.selected')) s.classList.remove('selected');
      row.classList.add('selected');
      this.showDetail(leaf);
    });
    return row;
  }

  async showDetail(leaf) {
    const dl = el('dl');
    const add = (k, v) => dl.append(el('dt', { text: k }), el('dd', { text: v }));
    add('value', compactJson(leaf.value, 2000));
    add('kind', leaf.kind ?? '—');
    if (leaf.stamp) {
      add('written by', leaf.stamp.blade);
      add('shard seq', String(leaf.stamp.seq));
      add('event time', `${clock(leaf.stamp.ts)} (${new Date(leaf.stamp.ts).toISOString()})`);
    }
    const blame = el('dd', { 'data-testid': 'explorer-blame', text: 'asking…' });
    dl.append(el('dt', { text: 'blame' }), blame);
    this.detailEl.replaceChildren(el('h3', { 'data-testid': 'explorer-detail-path', text: leaf.path }), dl);
    const r = await this.fetchJson(`/v1/blame/${encodeURIComponent(leaf.path)}`);
    if (this.selected !== leaf.path) return;
    if (r.ok) {
      blame.textContent = compactJson(r.body, 2000);
    } else {
      blame.textContent = r.status === 501 ? 'not available from this observer yet (the stamp above says who wrote it and when)' : r.error;
    }
  }
}

function buildTree(leaves) {
  const root = { kids: new Map(), leaf: null, size: 0 };
  for (const leaf of leaves) {
    let segs;
    try {
      segs = splitPath(leaf.path);
    } catch {
      segs = [leaf.path];
    }
    let node = root;
    node.size++;
    for (const s of segs) {
      let kid = node.kids.get(s);
      if (!kid) node.kids.set(s, (kid = { kids: new Map(), leaf: null, size: 0 }));
      node = kid;
      node.size++;
    }
    node.leaf = leaf;
  }
  return root;
}

// Numbers in keys sort as numbers (jobs.2 before jobs.10).
const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });
function naturalCompare(a, b) {
  return collator.compare(a, b);
}

function highlight(tag, cls, text, q) {
  const e = el(tag, { class: cls });
  if (!q) {
    e.textContent = text;
    return e;
  }
  const lower = text.toLowerCase();
  let i = 0;
  for (let j = lower.indexOf(q); j >= 0; j = lower.indexOf(q, i)) {
    e.append(text.slice(i, j), el('mark', { text: text.slice(j, j + q.length) }));
    i = j + q.length;
  }
  e.append(text.slice(i));
  return e;
}
