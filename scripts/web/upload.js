// @ts-check
/**
 * Uploads: one PUT /media/<name> at a time (a queue), each shown as a list item with a progress
 * bar, its speed, and the outcome. While a file uploads, a worker computes its SHA-256 from the
 * same File; the server's receipt carries the SHA-256 of what it stored, and the two must match.
 *
 * XMLHttpRequest and not fetch: only XHR reports upload progress in every browser. With a File
 * as its body it sets Content-Length itself, which the server requires.
 */
import {
  errorInWords,
  formatDuration,
  formatSize,
  formatSpeed,
  mediaHref,
  uploadName,
} from './format.js';

/** @typedef {{ sha256: string } | { error: string }} HashResult */
/** @typedef {{ name: string, size: number, sha256: string }} Receipt */
/**
 * What the server answered: a status (0 when the connection failed) and its JSON body.
 * @typedef {{ status: number, body: any, aborted?: boolean }} Reply
 */
/**
 * A file and the path it had under a dropped folder ('' for a file picked on its own).
 * @typedef {{ file: File, path: string }} Picked
 */

/**
 * Starts hashing a File in a module worker. Never rejects: what went wrong comes back as
 * { error }, and the upload is then reported "not verified" rather than failed.
 * @param {File} file @param {(fraction: number) => void} onProgress
 */
function startHash(file, onProgress) {
  /** @type {Worker | undefined} */
  let worker;
  /** @type {Promise<HashResult>} */
  const result = new Promise((resolve) => {
    try {
      worker = new Worker(new URL('./hash-worker.js', import.meta.url), { type: 'module' });
    } catch (error) {
      resolve({ error: `no worker could start (${String(error)})` });
      return;
    }
    const done = (/** @type {HashResult} */ outcome) => {
      worker?.terminate();
      resolve(outcome);
    };
    worker.onmessage = ({ data }) => {
      if (typeof data.progress === 'number') onProgress(data.progress);
      else if (typeof data.sha256 === 'string') done({ sha256: data.sha256 });
      else done({ error: String(data.error ?? 'the worker gave no answer') });
    };
    // A worker script that cannot load fires a plain Event; one that throws, an ErrorEvent.
    worker.onerror = (event) => {
      event.preventDefault();
      done({ error: event.message || 'the hashing script could not load' });
    };
    worker.postMessage(file);
  });
  return { result, cancel: () => worker?.terminate() };
}

/**
 * PUT the file; resolves with the reply whatever it is.
 * @param {string} href @param {File} file @param {(loaded: number) => void} onProgress
 */
function put(href, file, onProgress) {
  const xhr = new XMLHttpRequest();
  /** @type {Promise<Reply>} */
  const reply = new Promise((resolve) => {
    xhr.upload.onprogress = (event) => onProgress(event.loaded);
    xhr.onload = () => resolve({ status: xhr.status, body: parseJson(xhr.responseText) });
    xhr.onerror = () => resolve({ status: 0, body: undefined });
    xhr.onabort = () => resolve({ status: 0, body: undefined, aborted: true });
  });
  xhr.open('PUT', href);
  xhr.send(file);
  return { reply, abort: () => xhr.abort() };
}

/** @param {string} text */
function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * The item's states, as `data-state` on its <li> (the style sheet colours them):
 * queued → sending → checking → verified | mismatch | unverified, or refused | failed | cancelled.
 */
class Upload {
  /** @param {File} file @param {string} name where it goes */
  constructor(file, name) {
    this.file = file;
    this.name = name;
    this.state = 'queued';
    /** @type {(() => void) | undefined} */
    this.abort = undefined;

    this.item = document.createElement('li');
    this.item.className = 'upload';
    const head = document.createElement('div');
    head.className = 'upload-head';
    const title = document.createElement('span');
    title.className = 'upload-name';
    title.textContent = name;
    this.cancelButton = document.createElement('button');
    this.cancelButton.type = 'button';
    this.cancelButton.className = 'upload-cancel';
    this.cancelButton.textContent = 'Cancel';
    this.cancelButton.setAttribute('aria-label', `Cancel the upload of ${name}`);
    this.cancelButton.addEventListener('click', () => this.cancel());
    head.append(title, this.cancelButton);

    this.bar = document.createElement('progress');
    this.bar.max = 1;
    this.bar.value = 0;
    this.bar.setAttribute('aria-label', `Upload of ${name}`);
    this.progress = document.createElement('p');
    this.progress.className = 'upload-progress';
    this.progress.textContent = `${formatSize(file.size)}, waiting its turn`;
    // The outcome is announced; the progress text, which changes many times a second, is not.
    this.outcome = document.createElement('p');
    this.outcome.className = 'upload-outcome';
    this.outcome.setAttribute('role', 'status');
    this.detail = document.createElement('p');
    this.detail.className = 'upload-detail';
    this.item.append(head, this.bar, this.progress, this.outcome, this.detail);
    this.setState('queued');
  }

  get finished() {
    return !['queued', 'sending', 'checking'].includes(this.state);
  }

  /** @param {string} state @param {string} [outcome] @param {string} [detail] */
  setState(state, outcome = '', detail = '') {
    this.state = state;
    this.item.dataset.state = state;
    this.outcome.textContent = outcome;
    this.detail.textContent = detail;
    this.cancelButton.hidden = state !== 'queued' && state !== 'sending';
  }

  cancel() {
    if (this.state === 'queued') this.setState('cancelled', 'Cancelled: nothing was sent.');
    else this.abort?.();
  }

  /** Sends the file and checks the receipt; resolves true when the server stored it. */
  async run() {
    const { file, name } = this;
    /** @type {string} */
    let href;
    try {
      href = mediaHref(name);
    } catch {
      // encodeURIComponent throws on a name that is not valid Unicode text
      this.setState('refused', `Refused: ${errorInWords('BAD_NAME', 400)}.`);
      return false;
    }
    this.setState('sending');
    const started = performance.now();
    let hashed = 0;
    const hashing = startHash(file, (fraction) => (hashed = fraction));
    const sending = put(href, file, (loaded) => this.showProgress(loaded, started));
    this.abort = sending.abort;
    const reply = await sending.reply;
    this.abort = undefined;

    if (reply.status !== 200 && reply.status !== 201) {
      hashing.cancel();
      if (reply.aborted) {
        this.setState('cancelled', 'Cancelled: nothing was stored.');
      } else if (reply.status === 0) {
        this.setState('failed', `Failed: ${errorInWords(undefined, 0)}; nothing was stored.`);
      } else {
        const code = reply.body?.code;
        const words = errorInWords(code, reply.status);
        const message = typeof reply.body?.message === 'string' ? reply.body.message : '';
        this.setState('refused', `Refused: ${words}.`, [code, message].filter(Boolean).join(': '));
      }
      return false;
    }

    /** @type {Receipt} */
    const receipt = reply.body;
    const seconds = (performance.now() - started) / 1000;
    this.bar.value = 1;
    this.progress.textContent =
      `${formatSize(file.size)} in ${formatDuration(seconds)} · ` +
      `${formatSpeed(file.size / Math.max(seconds, 0.001))} · 100%`;
    const stored = reply.status === 200 ? 'Stored (it replaced the file of that name)' : 'Stored';
    // The hash may still be running when a fast network has finished: say so while waiting.
    const waiting = setInterval(
      () => this.setState('checking', `${stored}; checking SHA-256… ${Math.floor(hashed * 100)}%`),
      250,
    );
    this.setState('checking', `${stored}; checking SHA-256…`);
    const local = await hashing.result;
    clearInterval(waiting);
    const serverHash = `server SHA-256 ${receipt.sha256}`;
    if ('error' in local) {
      this.setState(
        'unverified',
        `${stored}, not verified: this page could not compute the file's SHA-256.`,
        `${serverHash}; ${local.error}`,
      );
    } else if (local.sha256 === receipt.sha256 && receipt.size === file.size) {
      this.setState('verified', `${stored} and verified: the SHA-256 matches.`, serverHash);
    } else {
      this.setState(
        'mismatch',
        `${stored}, but the SHA-256 does NOT match: the server's copy is not this file. Upload it again.`,
        `${serverHash} (${receipt.size} bytes); this file ${local.sha256} (${file.size} bytes)`,
      );
    }
    return true;
  }

  /** @param {number} loaded @param {number} started */
  showProgress(loaded, started) {
    const total = this.file.size;
    const fraction = total ? loaded / total : 1;
    const seconds = (performance.now() - started) / 1000;
    this.bar.value = fraction;
    // Speed averaged since the start: steadier to read than an instantaneous rate.
    const speed = seconds > 0.2 ? ` · ${formatSpeed(loaded / seconds)}` : '';
    this.progress.textContent = `${formatSize(loaded)} of ${formatSize(total)} · ${Math.floor(fraction * 100)}%${speed}`;
  }
}

/** The queue of uploads, drawn into a list element. */
export class Uploader {
  /** @param {HTMLElement} list @param {() => void} onStored called after each stored file */
  constructor(list, onStored) {
    this.list = list;
    this.onStored = onStored;
    /** @type {Upload[]} */
    this.queue = [];
    this.running = false;
  }

  /** Something is uploading or waiting to (a reason to ask before leaving the page). */
  get busy() {
    return this.running || this.queue.length > 0;
  }

  /**
   * Queues files for the folder typed ('' for the top of the library).
   * @param {readonly Picked[]} picked @param {string} folder
   */
  add(picked, folder) {
    for (const { file, path } of picked) {
      const upload = new Upload(file, uploadName(folder, path || file.name));
      this.list.prepend(upload.item); // the newest first, next to the controls
      this.queue.push(upload);
    }
    void this.pump();
  }

  /** Removes the items that are done from the list. */
  clearFinished() {
    for (const item of this.list.querySelectorAll('.upload')) {
      const state = item instanceof HTMLElement ? item.dataset.state : '';
      if (!['queued', 'sending', 'checking'].includes(state ?? '')) item.remove();
    }
  }

  /** One upload at a time: several at once share the same bandwidth and finish later each. */
  async pump() {
    if (this.running) return;
    this.running = true;
    try {
      for (let upload; (upload = this.queue.shift());) {
        if (upload.finished) continue; // cancelled while waiting
        if (await upload.run()) this.onStored();
      }
    } finally {
      this.running = false;
    }
  }
}

/**
 * The files of a drop. Folders are walked (their files keep their path under the folder), and
 * hidden files in them (.DS_Store, ._x) are left out: the library refuses names starting with a
 * dot. The entries are taken while the drop event runs: the browser empties the DataTransfer
 * afterwards.
 * @param {DataTransfer} transfer
 * @returns {Promise<Picked[]>}
 */
export async function droppedFiles(transfer) {
  /** @type {(Picked | FileSystemDirectoryEntry)[]} */
  const found = [];
  for (const item of transfer.items) {
    if (item.kind !== 'file') continue;
    const entry = item.webkitGetAsEntry?.();
    if (entry?.isDirectory) {
      found.push(/** @type {FileSystemDirectoryEntry} */ (entry));
      continue;
    }
    const file = item.getAsFile();
    if (file) found.push({ file, path: '' });
  }
  /** @type {Picked[]} */
  const files = [];
  for (const thing of found) {
    if ('file' in thing) files.push(thing);
    else files.push(...(await filesUnder(thing, thing.name)));
  }
  return files;
}

/** @param {FileSystemDirectoryEntry} directory @param {string} path @returns {Promise<Picked[]>} */
async function filesUnder(directory, path) {
  const reader = directory.createReader();
  /** @type {Picked[]} */
  const files = [];
  // readEntries hands out a directory in batches (100 in Chrome) until an empty one.
  for (;;) {
    /** @type {FileSystemEntry[]} */
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) return files;
    for (const entry of batch) {
      if (entry.name.startsWith('.')) continue;
      const inner = `${path}/${entry.name}`;
      if (entry.isDirectory) {
        files.push(...(await filesUnder(/** @type {FileSystemDirectoryEntry} */ (entry), inner)));
      } else {
        const fileEntry = /** @type {FileSystemFileEntry} */ (entry);
        files.push({
          file: await new Promise((ok, fail) => fileEntry.file(ok, fail)),
          path: inner,
        });
      }
    }
  }
}
