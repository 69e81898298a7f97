// @ts-check
/**
 * The player: one video, song or picture at a time, in the page. The browser's own <video> and
 * <audio> controls do the seeking; they ask the server for byte ranges, which it serves.
 * Which item is next or previous is the page's business (app.js), not the player's.
 */
import {
  TYPE_LABELS,
  baseName,
  errorCodeOf,
  errorInWords,
  folderOf,
  formatDate,
  formatSize,
  mediaHref,
} from './format.js';

/** @typedef {import('./catalog.js').Item} Item */

/**
 * @typedef {object} PlayerHooks
 * @property {(step: 1 | -1) => void} navigate previous (-1) or next (1)
 * @property {() => void} close
 * @property {() => void} ended a song or video played to its end
 */

export class Player {
  /** @param {HTMLElement} root the player's section @param {PlayerHooks} hooks */
  constructor(root, hooks) {
    this.root = root;
    this.title = find(root, '.player-title');
    this.folder = find(root, '.player-folder');
    this.stage = find(root, '.stage');
    this.problem = find(root, '.player-problem');
    this.details = find(root, '.player-details');
    this.place = find(root, '.player-place');
    this.download = /** @type {HTMLAnchorElement} */ (find(root, '.player-download'));
    this.previous = /** @type {HTMLButtonElement} */ (find(root, '.player-previous'));
    this.next = /** @type {HTMLButtonElement} */ (find(root, '.player-next'));
    /** @type {Item | null} */
    this.current = null;
    this.previous.addEventListener('click', () => hooks.navigate(-1));
    this.next.addEventListener('click', () => hooks.navigate(1));
    find(root, '.player-close').addEventListener('click', () => hooks.close());
    this.hooks = hooks;
  }

  get isOpen() {
    return !this.root.hidden;
  }

  /**
   * Shows an item and starts it (the click or key that chose it lets it play with sound).
   * @param {Item} item
   */
  show(item) {
    this.stop();
    this.current = item;
    const href = mediaHref(item.name);
    const element = this.elementFor(item, href);
    this.stage.className = `stage ${item.type}`;
    this.stage.replaceChildren(element);
    this.title.textContent = baseName(item.name);
    this.folder.textContent = folderOf(item.name);
    this.details.textContent = `${TYPE_LABELS[item.type]} · ${formatSize(item.size)} · ${formatDate(item.mtime)}`;
    this.problem.hidden = true;
    this.download.href = `${href}?download`;
    this.download.download = baseName(item.name);
    this.root.hidden = false;
    if (element instanceof HTMLMediaElement) {
      // A refused autoplay is fine: the controls are there to press play.
      element.play().catch(() => {});
    }
  }

  /**
   * Where the item stands in the list shown: "3 of 12", and whether there is a previous or a
   * next one. `index` is -1 when the search or a filter has hidden the item playing.
   * @param {number} index @param {number} total
   */
  setPlace(index, total) {
    this.place.textContent = index < 0 ? `not in the list shown` : `${index + 1} of ${total}`;
    this.previous.disabled = total === 0 || index === 0;
    this.next.disabled = total === 0 || index === total - 1;
  }

  close() {
    this.stop();
    this.current = null;
    this.stage.replaceChildren();
    this.root.hidden = true;
  }

  /** Stops the media playing, and its download: a removed element may go on fetching. */
  stop() {
    for (const media of this.stage.querySelectorAll('video, audio')) {
      if (!(media instanceof HTMLMediaElement)) continue;
      media.pause();
      media.removeAttribute('src');
      media.load();
    }
  }

  /** @param {Item} item @param {string} href */
  elementFor(item, href) {
    /** @type {HTMLVideoElement | HTMLAudioElement | HTMLImageElement} */
    let element;
    if (item.type === 'picture') {
      element = document.createElement('img');
      element.alt = baseName(item.name);
    } else {
      element = document.createElement(item.type === 'video' ? 'video' : 'audio');
      element.controls = true;
      element.preload = 'metadata';
      if (element instanceof HTMLVideoElement) element.playsInline = true; // phones: no forced full screen
      element.setAttribute('aria-label', `${TYPE_LABELS[item.type]}: ${baseName(item.name)}`);
      element.addEventListener('ended', () => this.hooks.ended());
    }
    element.addEventListener('error', () => this.cannotPlay(item));
    element.src = href;
    return element;
  }

  /**
   * The server sends any file it has; not every browser plays every format (.mkv, .heic…).
   * @param {Item} item
   */
  cannotPlay(item) {
    if (item !== this.current) return;
    const verb = item.type === 'picture' ? 'show' : 'play';
    this.problem.textContent = `This browser cannot ${verb} this ${TYPE_LABELS[item.type]}. Download it to open it with another program.`;
    this.problem.hidden = false;
    void this.explainRefusal(item);
  }

  /**
   * A refusal (signed out, an account's rules changed since the list was loaded) also ends up
   * as a media error, which says nothing: ask the server for one byte, and say why it refuses.
   * @param {Item} item
   */
  async explainRefusal(item) {
    /** @type {Response} */
    let response;
    try {
      response = await fetch(mediaHref(item.name), {
        headers: { Range: 'bytes=0-0' },
        cache: 'no-store',
      });
    } catch {
      return;
    }
    if (response.ok) {
      void response.body?.cancel();
      return;
    }
    const code = await errorCodeOf(response);
    if (item !== this.current) return;
    this.problem.textContent = `This ${TYPE_LABELS[item.type]} could not be loaded: ${errorInWords(code, response.status)}.`;
  }
}

/** @param {ParentNode} root @param {string} selector */
function find(root, selector) {
  const element = root.querySelector(selector);
  if (!(element instanceof HTMLElement)) throw new Error(`the page has no ${selector}`);
  return element;
}
