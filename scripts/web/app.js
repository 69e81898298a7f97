// @ts-check
/**
 * The page: wires the catalog table, the player and the uploads to the document, and holds the
 * one piece of state they share (what is listed, how it is filtered and sorted, what plays).
 */
import { showAccount } from './account.js';
import { CatalogError, fetchCatalog, filterItems, foldersOf, rowOf, sortItems } from './catalog.js';
import { SIGN_IN_CODES, playlistHref, plural, formatSize } from './format.js';
import { Player } from './player.js';
import { Uploader, droppedFiles } from './upload.js';

/** @typedef {import('./catalog.js').Item} Item */
/** @typedef {import('./catalog.js').SortKey} SortKey */
/** @typedef {import('./format.js').MediaType} MediaType */

/** Rows drawn at once: a library of 100,000 files stays quick to search; "Show more" adds more. */
const PAGE = 500;

/**
 * @template {Element} T
 * @param {string} selector @param {new (...args: any[]) => T} type
 * @returns {T}
 */
function $(selector, type) {
  const element = document.querySelector(selector);
  if (!(element instanceof type)) throw new Error(`the page has no ${selector}`);
  return element;
}

const table = $('#catalog', HTMLTableElement);
const rows = $('#rows', HTMLTableSectionElement);
const count = $('#count', HTMLElement);
const empty = $('#empty', HTMLElement);
const more = $('#more', HTMLButtonElement);
const search = $('#search', HTMLInputElement);
const folderSelect = $('#folder', HTMLSelectElement);
const playlist = $('#playlist', HTMLAnchorElement);
const targetFolder = $('#target-folder', HTMLInputElement);
const folderList = $('#folder-list', HTMLDataListElement);
const fileInput = $('#files', HTMLInputElement);
const uploadsHead = $('.uploads-head', HTMLElement);
const announce = $('#announce', HTMLElement);
const account = $('#account', HTMLElement);

const state = {
  /** @type {Item[]} everything the server listed, in its order */
  items: [],
  /** @type {Item[]} the same, in the chosen order */
  sorted: [],
  /** @type {Item[]} what the filter lets through: the rows, and what previous/next walk */
  view: [],
  loaded: false,
  /** @type {string} why the catalog could not be loaded, if it could not */
  failure: '',
  /** @type {string | undefined} the server's code for that (AUTH_REQUIRED…), if it sent one */
  failureCode: undefined,
  /** @type {import('./catalog.js').Filter} */
  filter: { query: '', type: '', folder: '' },
  /** @type {SortKey} */
  sortKey: 'name',
  /** @type {1 | -1} */
  sortDirection: 1,
  limit: PAGE,
};

const player = new Player($('#player', HTMLElement), {
  navigate: (step) => go(step),
  close: () => closePlayer(),
  ended: () => {
    // Songs play on one after another; a video or a picture next waits to be chosen.
    const next = neighbour(1);
    if (player.current?.type === 'music' && next?.type === 'music') play(next);
  },
});

const uploader = new Uploader($('#uploads', HTMLElement), () => scheduleRefresh());

// ---- the catalog ---------------------------------------------------------------------------

async function load() {
  // Who is signed in may have changed too (signed in on another tab, an account removed).
  void showAccount(account);
  try {
    state.items = await fetchCatalog();
    state.failure = '';
    state.failureCode = undefined;
  } catch (error) {
    state.failure = error instanceof Error ? error.message : String(error);
    state.failureCode = error instanceof CatalogError ? error.code : undefined;
  }
  state.loaded = true;
  state.sorted = sortItems(state.items, state.sortKey, state.sortDirection);
  showFolders();
  update();
}

/** @type {ReturnType<typeof setTimeout> | undefined} */
let refreshTimer;
/** After uploads: one reload for a burst of small files, not one per file. */
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => void load(), 200);
}

/** The folder filter and the upload folder's suggestions, from the folders that exist. */
function showFolders() {
  const folders = foldersOf(state.items);
  const chosen = state.filter.folder;
  folderSelect.replaceChildren(new Option('All folders', ''));
  folderList.replaceChildren();
  for (const folder of folders) {
    folderSelect.append(new Option(folder, folder));
    folderList.append(new Option(folder));
  }
  // A folder whose last file went away stays chosen (and lists nothing) until changed.
  if (chosen && !folders.includes(chosen)) folderSelect.append(new Option(chosen, chosen));
  folderSelect.value = chosen;
}

/** Filters and draws the table, the count and the messages; keeps the focus on its row. */
function update() {
  const focused = focusedRow()?.dataset.name;
  state.view = filterItems(state.sorted, state.filter);
  const shown = state.view.slice(0, state.limit);
  rows.replaceChildren(...shown.map(rowOf));
  markPlaying();
  const target = (focused && rowFor(focused)) || rowFor(player.current?.name) || rows.rows[0];
  if (target instanceof HTMLElement) {
    target.tabIndex = 0;
    if (focused) target.focus({ preventScroll: true });
  }

  const total = state.items.length;
  const listed = state.view.length;
  const notShown = listed - shown.length;
  count.textContent = countText(listed, total);
  empty.hidden = !state.loaded || listed > 0;
  empty.textContent = state.failure
    ? `The library could not be loaded (${state.failure}). ${
        SIGN_IN_CODES.includes(state.failureCode ?? '')
          ? 'Sign in (at the top of the page) to see it.'
          : 'Check the server, then press Refresh.'
      }`
    : total === 0
      ? 'The library is empty: nothing has been shared yet. Upload videos, music or pictures here, or copy them into the server’s media folder.'
      : 'No file matches. Change the search, the type or the folder.';
  table.hidden = listed === 0;
  more.hidden = notShown === 0;
  more.textContent = `Show ${Math.min(PAGE, notShown).toLocaleString()} more (${notShown.toLocaleString()} not shown)`;

  for (const header of document.querySelectorAll('th[aria-sort]')) {
    const key = header.querySelector('button')?.dataset.sort;
    const direction = state.sortDirection === 1 ? 'ascending' : 'descending';
    header.setAttribute('aria-sort', key === state.sortKey ? direction : 'none');
  }
  playlist.href = playlistHref(state.filter.type);
  if (player.current) player.setPlace(indexOf(player.current), state.view.length);
}

/**
 * "4 files · 171 kB", or "2 of 4 files · 155 kB" while a filter hides some.
 * @param {number} listed @param {number} total
 */
function countText(listed, total) {
  if (!state.loaded) return 'Loading the library…';
  if (state.failure) return 'The library could not be loaded.';
  const bytes = formatSize(state.view.reduce((sum, item) => sum + item.size, 0));
  const files = plural(total, 'file', 'files');
  return listed === total
    ? `${files} · ${bytes}`
    : `${listed.toLocaleString()} of ${files} · ${bytes}`;
}

/** @param {string | undefined} name */
function rowFor(name) {
  if (name === undefined) return undefined;
  for (const row of rows.rows) if (row.dataset.name === name) return row;
  return undefined;
}

function focusedRow() {
  const active = document.activeElement;
  return active instanceof HTMLTableRowElement && rows.contains(active) ? active : undefined;
}

/** @param {Item} item */
function indexOf(item) {
  return state.view.findIndex((entry) => entry.name === item.name);
}

function markPlaying() {
  for (const row of rows.rows) {
    const playing = row.dataset.name === player.current?.name;
    row.classList.toggle('playing', playing);
    if (playing) row.setAttribute('aria-current', 'true');
    else row.removeAttribute('aria-current');
  }
}

/** Moves the roving focus to a row (the table is one Tab stop). @param {HTMLElement} row */
function focusRow(row) {
  for (const other of rows.rows) other.tabIndex = -1;
  row.tabIndex = 0;
  row.focus();
}

// ---- playing -------------------------------------------------------------------------------

/** @param {Item} item */
function play(item) {
  player.show(item);
  player.setPlace(indexOf(item), state.view.length);
  markPlaying();
  announce.textContent = `Now ${item.type === 'picture' ? 'showing' : 'playing'} ${item.name}`;
  // The player sits above the list: bring it into sight (closing it puts the focus back on the
  // row, which scrolls the list back to where it was).
  player.root.scrollIntoView({ block: 'nearest' });
}

/** The item `step` rows away from the one playing, in the list as shown. @param {1 | -1} step */
function neighbour(step) {
  const current = player.current;
  if (!current || state.view.length === 0) return undefined;
  const index = indexOf(current);
  // The item playing was filtered out: start again from the list's first (or last) item.
  if (index < 0) return state.view[step === 1 ? 0 : state.view.length - 1];
  return state.view[index + step];
}

/** Previous or next; the focus follows it when it was in the list. @param {1 | -1} step */
function go(step) {
  const item = neighbour(step);
  if (!item) return;
  const inList = focusedRow() !== undefined;
  const index = indexOf(item);
  if (index >= state.limit) {
    state.limit = index + 1;
    update();
  }
  play(item);
  const row = rowFor(item.name);
  if (inList && row) focusRow(row);
}

function closePlayer() {
  const name = player.current?.name;
  const focusWasInPlayer = player.root.contains(document.activeElement);
  player.close();
  markPlaying();
  // Back to the row of what was playing, so the keyboard does not lose its place.
  const row = rowFor(name);
  if (row && (focusWasInPlayer || document.activeElement === document.body)) focusRow(row);
}

// ---- events: the list ----------------------------------------------------------------------

search.addEventListener('input', () => {
  state.filter.query = search.value;
  state.limit = PAGE;
  update();
});

for (const radio of document.querySelectorAll('input[name="type"]')) {
  radio.addEventListener('change', () => {
    if (!(radio instanceof HTMLInputElement) || !radio.checked) return;
    state.filter.type = /** @type {MediaType | ''} */ (radio.value);
    state.limit = PAGE;
    update();
  });
}

folderSelect.addEventListener('change', () => {
  state.filter.folder = folderSelect.value;
  // Uploads go to the folder being looked at, unless another is typed.
  targetFolder.value = folderSelect.value;
  state.limit = PAGE;
  update();
});

for (const button of document.querySelectorAll('th button[data-sort]')) {
  button.addEventListener('click', () => {
    const key = /** @type {SortKey} */ (
      button instanceof HTMLElement ? button.dataset.sort : 'name'
    );
    if (key === state.sortKey) {
      state.sortDirection = state.sortDirection === 1 ? -1 : 1;
    } else {
      state.sortKey = key;
      // Names and types read A to Z; the largest and the newest are what people look for.
      state.sortDirection = key === 'size' || key === 'date' ? -1 : 1;
    }
    state.sorted = sortItems(state.items, state.sortKey, state.sortDirection);
    update();
  });
}

more.addEventListener('click', () => {
  state.limit += PAGE;
  update();
});

$('#refresh', HTMLButtonElement).addEventListener('click', () => void load());
// Back on this tab: files may have come or gone meanwhile (the other door, another browser).
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') void load();
});

/** @param {EventTarget | null} target */
function rowOfEvent(target) {
  const row = target instanceof Element ? target.closest('tr') : null;
  return row && rows.contains(row) ? row : undefined;
}

/** @param {HTMLElement} row */
function playRow(row) {
  const item = state.view.find((entry) => entry.name === row.dataset.name);
  if (item) play(item);
}

rows.addEventListener('click', (event) => {
  const row = rowOfEvent(event.target);
  if (!row) return;
  focusRow(row);
  playRow(row);
});

rows.addEventListener('keydown', (event) => {
  const row = rowOfEvent(event.target);
  if (!row || event.altKey || event.ctrlKey || event.metaKey) return;
  const all = [...rows.rows];
  const at = all.indexOf(row);
  /** @type {HTMLElement | undefined} */
  let to;
  switch (event.key) {
    case 'Enter':
    case ' ':
      playRow(row);
      break;
    case 'ArrowDown':
      to = all[at + 1];
      break;
    case 'ArrowUp':
      to = all[at - 1];
      break;
    case 'Home':
      to = all[0];
      break;
    case 'End':
      to = all[all.length - 1];
      break;
    default:
      return;
  }
  event.preventDefault(); // no page scroll for Space and the arrows
  if (to) focusRow(to);
});

// ---- events: the whole page ----------------------------------------------------------------

document.addEventListener('keydown', (event) => {
  if (!player.isOpen || event.defaultPrevented) return;
  if (event.altKey || event.ctrlKey || event.metaKey) return;
  const target = event.target;
  if (event.key === 'Escape') {
    // Escape in a search box with text clears the text first (the browser does that).
    if (target === search && search.value) return;
    closePlayer();
    event.preventDefault();
    return;
  }
  if (event.key !== 'ArrowLeft' && event.key !== 'ArrowRight') return;
  // Arrows belong to text fields, the type radios, lists and the media's own seek bar.
  if (target instanceof Element && target.closest('input, select, textarea, video, audio')) return;
  go(event.key === 'ArrowRight' ? 1 : -1);
  event.preventDefault();
});

// ---- events: uploads -----------------------------------------------------------------------

/** @param {import('./upload.js').Picked[]} picked */
function upload(picked) {
  if (picked.length === 0) return;
  uploadsHead.hidden = false;
  uploader.add(picked, targetFolder.value);
}

fileInput.addEventListener('change', () => {
  upload([...(fileInput.files ?? [])].map((file) => ({ file, path: '' })));
  fileInput.value = ''; // choosing the same file again must fire 'change' again
});

$('#clear-uploads', HTMLButtonElement).addEventListener('click', () => uploader.clearFinished());

// Files can be dropped anywhere on the page; the overlay says so while they are dragged over.
let dragDepth = 0;
/** @param {DragEvent} event */
const carriesFiles = (event) => event.dataTransfer?.types.includes('Files') ?? false;
document.addEventListener('dragenter', (event) => {
  if (!carriesFiles(event)) return;
  dragDepth++;
  document.body.classList.add('dragging');
});
document.addEventListener('dragleave', (event) => {
  if (!carriesFiles(event)) return;
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) document.body.classList.remove('dragging');
});
document.addEventListener('dragover', (event) => {
  if (!carriesFiles(event) || !event.dataTransfer) return;
  event.preventDefault(); // without it the browser opens the file instead of letting us drop
  event.dataTransfer.dropEffect = 'copy';
});
document.addEventListener('drop', (event) => {
  if (!carriesFiles(event) || !event.dataTransfer) return;
  event.preventDefault();
  dragDepth = 0;
  document.body.classList.remove('dragging');
  droppedFiles(event.dataTransfer).then(upload, (error) => {
    announce.textContent = `The dropped files could not be read: ${error}`;
  });
});

window.addEventListener('beforeunload', (event) => {
  if (uploader.busy) event.preventDefault(); // leaving would cut the uploads in flight
});

void load();
