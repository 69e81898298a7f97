// @ts-check
/**
 * The catalog: fetched from /api/list, then sorted, filtered and drawn as table rows. Sorting
 * and filtering are pure functions over the loaded entries; only `rowOf` builds DOM.
 */
import { baseName, errorCodeOf, errorInWords, folderOf, formatDate, formatSize } from './format.js';

/** @typedef {import('./format.js').Entry} Entry */
/** @typedef {import('./format.js').MediaType} MediaType */
/** @typedef {'type' | 'name' | 'size' | 'date'} SortKey */

/**
 * An entry plus what sorting and searching need, computed once per load rather than per key
 * stroke: `order` is the server's order (UTF-8 bytes of the name), the last tie-breaker.
 * @typedef {Entry & { order: number, key: string, time: number }} Item
 */

/**
 * What is shown: a search text, a type, a folder ('' for all of each).
 * @typedef {{ query: string, type: MediaType | '', folder: string }} Filter
 */

/** @type {Record<MediaType, number>} */
const TYPE_ORDER = { video: 0, music: 1, picture: 2 };

// Names sort the way people read them: "Episode 2" before "Episode 10", "b" next to "B".
const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

/**
 * For matching only: case and Unicode form are folded, so typing "é" finds a name that macOS
 * stored decomposed. The names themselves are never changed.
 * @param {string} text
 */
export function searchKey(text) {
  return text.normalize('NFC').toLocaleLowerCase();
}

/** A refused /api/list: the refusal in words, and the server's code (AUTH_REQUIRED…). */
export class CatalogError extends Error {
  /** @param {string} message @param {string | undefined} code */
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

/** @returns {Promise<Item[]>} */
export async function fetchCatalog() {
  const response = await fetch('/api/list', { cache: 'no-store' });
  if (!response.ok) {
    const code = await errorCodeOf(response);
    throw new CatalogError(errorInWords(code, response.status), code);
  }
  /** @type {{ count: number, entries: Entry[] }} */
  const body = await response.json();
  return body.entries.map((entry, order) => ({
    ...entry,
    order,
    key: searchKey(entry.name),
    time: Date.parse(entry.mtime),
  }));
}

/** @type {Record<SortKey, (a: Item, b: Item) => number>} */
const COMPARE = {
  type: (a, b) => TYPE_ORDER[a.type] - TYPE_ORDER[b.type],
  name: () => 0, // the tie-breakers below are the name order
  size: (a, b) => a.size - b.size,
  date: (a, b) => a.time - b.time,
};

/**
 * A sorted copy. `direction` 1 is ascending, -1 descending; equal keys fall back to the name.
 * @param {readonly Item[]} items @param {SortKey} key @param {1 | -1} direction
 */
export function sortItems(items, key, direction) {
  const compare = COMPARE[key];
  return [...items].sort(
    (a, b) => direction * (compare(a, b) || collator.compare(a.name, b.name) || a.order - b.order),
  );
}

/**
 * The items the filter lets through, in the order given. Every word of the query must appear
 * somewhere in the name (folders included), so "beach 2024" finds "2024/summer/beach.jpg".
 * @param {readonly Item[]} items @param {Filter} filter
 */
export function filterItems(items, { query, type, folder }) {
  const words = searchKey(query).split(/\s+/).filter(Boolean);
  const prefix = folder ? `${folder}/` : '';
  return items.filter(
    (item) =>
      (!type || item.type === type) &&
      (!prefix || item.name.startsWith(prefix)) &&
      words.every((word) => item.key.includes(word)),
  );
}

/**
 * Every folder that holds something, parents included ("a", "a/b"), in reading order.
 * @param {readonly Item[]} items
 */
export function foldersOf(items) {
  const folders = new Set();
  for (const item of items) {
    for (let folder = folderOf(item.name); folder && !folders.has(folder);) {
      folders.add(folder);
      folder = folderOf(folder);
    }
  }
  return [...folders].sort((a, b) => collator.compare(a, b) || (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * One table row. Rows are focusable (a roving tabindex: the table is one Tab stop, arrows move
 * inside it) and carry the name so that events on them find their item.
 * @param {Item} item
 */
export function rowOf(item) {
  const row = document.createElement('tr');
  row.tabIndex = -1;
  row.dataset.name = item.name;
  row.dataset.type = item.type;

  const icon = document.createElement('img');
  icon.src = `/assets/${item.type}.svg`;
  icon.alt = item.type;
  icon.width = 20;
  icon.height = 20;

  const name = document.createElement('td');
  name.className = 'name';
  const folder = folderOf(item.name);
  if (folder) name.append(span('folder', `${folder}/`));
  name.append(span('base', baseName(item.name)));

  const size = cell('size', formatSize(item.size));
  size.title = `${item.size.toLocaleString()} bytes`;

  const time = document.createElement('time');
  time.dateTime = item.mtime;
  time.textContent = formatDate(item.mtime);
  const date = cell('date', '');
  date.append(time);

  const type = cell('type', '');
  type.append(icon);
  row.append(type, name, size, date);
  return row;
}

/** @param {string} className @param {string} text */
function cell(className, text) {
  const td = document.createElement('td');
  td.className = className;
  td.textContent = text;
  return td;
}

/** @param {string} className @param {string} text */
function span(className, text) {
  const element = document.createElement('span');
  element.className = className;
  element.textContent = text;
  return element;
}
