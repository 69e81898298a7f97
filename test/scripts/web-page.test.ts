/**
 * The web page (scripts/web, http.md "The web page") in a real browser: Debian's chromium driven
 * by playwright-core, against an in-process MediaServer whose page comes from the source folder.
 * The library is made with ffmpeg (a 4-second VP8 video, an Opus song, a PNG picture). The
 * subtests share one page and run in order: each starts from where the previous one left it.
 * Ends with a screenshot in .tap/web-page.png to look at (UPDATE_SCREENSHOT=1 writes the README's,
 * scripts/screenshots/web-page.png, instead). Then the page on servers with accounts (access.md),
 * not signed in and signed in with HTTP Basic, each in a browser context of its own.
 */
import t, { type Test as Tap } from 'tap';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import {
  copyFile,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { Access } from '../../lib/access.js';
import { hashPassword } from '../../lib/accounts.js';
import { loadWebAssets } from '../../lib/web-assets.js';
import { MediaServer } from '../../pipelines/server.js';
import { eventually } from '../helpers/raw-client.js';
import { ROOT } from '../helpers/paths.js';

const CHROMIUM = '/usr/bin/chromium';
const SHOT = join(
  ROOT,
  process.env.UPDATE_SCREENSHOT ? 'scripts/screenshots/web-page.png' : '.tap/web-page.png',
);
/** Every wait in this file is bounded by this (or less). */
const WAIT_MS = 10_000;

const run = promisify(execFile);
const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/**
 * The browser globals the page.evaluate callbacks below touch. They run in the page, but this
 * file is compiled for Node (no DOM library), so each callback names what it uses from here.
 */
interface InPage {
  document: { activeElement: InPageElement | null; body: InPageElement };
  DataTransfer: new () => { items: { add(file: unknown): unknown } };
  DragEvent: new (type: string, init: object) => unknown;
  File: new (parts: unknown[], name: string, options: { type: string }) => unknown;
}
interface InPageElement {
  matches(selector: string): boolean;
  getAttribute(name: string): string | null;
  dispatchEvent(event: unknown): boolean;
  addEventListener(type: string, listener: () => void, options?: object): void;
}
interface InPageMedia {
  currentTime: number;
  naturalWidth: number;
  pause(): void;
}

if (!existsSync(CHROMIUM)) {
  t.plan(0, `no chromium at ${CHROMIUM}`);
} else {
  await main();
}

async function main(): Promise<void> {
  // ---- the library: made with ffmpeg, with fixed dates (the page shows them) ----
  const root = await mkdtemp(join(tmpdir(), 'ioe-web-page-'));
  const emptyRoot = await mkdtemp(join(tmpdir(), 'ioe-web-empty-'));
  const VIDEO = 'films/test pattern.webm';
  // #, [ ], a space and a non-ASCII letter: each segment must be percent-encoded on its own.
  const VIDEO_2 = 'films/Zoë #2 [copy].webm';
  const SONG = 'music/tone.ogg';
  const PICTURE = 'pictures/pattern.png';
  const DATES: Record<string, string> = {
    [VIDEO]: '2026-01-15T10:00:00.000Z',
    [VIDEO_2]: '2026-03-02T08:30:00.000Z',
    [SONG]: '2025-12-24T18:45:00.000Z',
    [PICTURE]: '2026-02-10T12:00:00.000Z',
  };
  for (const folder of ['films', 'music', 'pictures']) await mkdir(join(root, folder));
  const ffmpeg = (args: string, out: string) =>
    run('ffmpeg', ['-v', 'error', '-y', ...args.split(' '), join(root, out)]);
  await Promise.all([
    ffmpeg('-f lavfi -i testsrc=duration=4:size=320x240:rate=25 -c:v libvpx -b:v 200k', VIDEO),
    ffmpeg('-f lavfi -i sine=frequency=440:duration=3 -c:a libopus -b:a 32k', SONG),
    ffmpeg('-f lavfi -i testsrc=size=160x120 -frames:v 1', PICTURE),
  ]);
  await copyFile(join(root, VIDEO), join(root, VIDEO_2));
  for (const [name, iso] of Object.entries(DATES)) {
    await utimes(join(root, name), new Date(iso), new Date(iso));
  }

  // ---- the servers: the real page and the noble files, as scripts/server.ts loads them ----
  const noble = dirname(fileURLToPath(import.meta.resolve('@noble/hashes/sha2.js')));
  const assets = await loadWebAssets({
    page: join(ROOT, 'scripts/web/'),
    extra: Object.fromEntries(
      ['sha2.js', '_md.js', '_u64.js', 'utils.js'].map((f) => [
        `noble-hashes/${f}`,
        join(noble, f),
      ]),
    ),
  });
  const server = await MediaServer.create({
    root,
    host: '127.0.0.1',
    port: 0,
    httpPort: 0,
    webAssets: assets,
  });
  await server.listen();
  const base = `http://127.0.0.1:${server.httpAddress!.port}`;
  // An empty library with a tiny upload limit: the empty message and a real TOO_LARGE.
  const small = await MediaServer.create({
    root: emptyRoot,
    host: '127.0.0.1',
    port: 0,
    httpPort: 0,
    webAssets: assets,
    maxUpload: 1000,
  });
  await small.listen();
  const smallBase = `http://127.0.0.1:${small.httpAddress!.port}`;

  // Servers with accounts (cheap credentials: N = 2^15, the format's floor), on a copy of the
  // library: alice reads everything and writes under uploads/; bob reads films/ only.
  // `shared` lets anonymous read music/; `closed` lets anonymous do nothing.
  const accountsDir = await mkdtemp(join(tmpdir(), 'ioe-web-accounts-'));
  const accountsRoot = join(accountsDir, 'media');
  for (const name of [VIDEO, SONG, PICTURE]) {
    await mkdir(dirname(join(accountsRoot, name)), { recursive: true });
    await copyFile(join(root, name), join(accountsRoot, name));
  }
  const ALICE_PASSWORD = 'alice: a password, with punctuation';
  const FAST = { ln: 15, r: 1, p: 1 };
  const accountLines = [
    `alice:${await hashPassword(ALICE_PASSWORD, FAST)}:r=/,rw=/uploads`,
    `bob:${await hashPassword('bob pw', FAST)}:r=/films`,
  ];
  const withAccounts = async (file: string, lines: string[]): Promise<MediaServer> => {
    const usersFile = join(accountsDir, file);
    await writeFile(usersFile, lines.join('\n') + '\n', { mode: 0o600 });
    const made = await MediaServer.create({
      root: accountsRoot,
      host: '127.0.0.1',
      port: 0,
      httpPort: 0,
      webAssets: assets,
      access: await Access.create({ usersFile, bindHost: '127.0.0.1' }),
    });
    await made.listen();
    return made;
  };
  const shared = await withAccounts('users-shared', [...accountLines, 'anonymous::r=/music']);
  const closed = await withAccounts('users-closed', accountLines);
  const sharedBase = `http://127.0.0.1:${shared.httpAddress!.port}`;
  const closedBase = `http://127.0.0.1:${closed.httpAddress!.port}`;

  const browser: Browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
  // Fixed locale, time zone and colours: the dates read the same on every machine.
  const context: BrowserContext = await browser.newContext({
    locale: 'en-GB',
    timezoneId: 'UTC',
    colorScheme: 'light',
    viewport: { width: 1280, height: 900 },
  });
  t.teardown(async () => {
    await browser.close();
    await Promise.all([
      server.forceQuit(),
      small.forceQuit(),
      shared.forceQuit(),
      closed.forceQuit(),
    ]);
    await rm(root, { recursive: true, force: true });
    await rm(emptyRoot, { recursive: true, force: true });
    await rm(accountsDir, { recursive: true, force: true });
  });

  // Everything the pages ask for, and what the console says.
  const requests: string[] = [];
  const responses: { url: string; status: number; range?: string }[] = [];
  const consoleErrors: string[] = [];
  context.on('request', (request) => requests.push(request.url()));
  context.on('response', (response) =>
    responses.push({
      url: response.url(),
      status: response.status(),
      range: response.request().headers()['range'],
    }),
  );
  const watch = (page: Page): void => {
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push(message.text());
    });
    page.on('pageerror', (error) => consoleErrors.push(`page error: ${error.message}`));
  };

  const page = await context.newPage();
  watch(page);
  page.setDefaultTimeout(WAIT_MS);

  const rowNames = (): Promise<string[]> =>
    page
      .locator('#rows tr')
      .evaluateAll((rows) => rows.map((row) => row.getAttribute('data-name') ?? ''));
  const rowsAre = async (t: Tap, expected: string[], what: string): Promise<void> => {
    await eventually(async () => same(await rowNames(), expected), what, WAIT_MS).catch(() => {});
    t.same(await rowNames(), expected, what);
  };
  const currentTime = (selector = '.stage video'): Promise<number> =>
    page.locator(selector).evaluate((element: InPageMedia) => element.currentTime);
  const waitUntil = async (check: () => Promise<boolean>, what: string): Promise<boolean> => {
    try {
      await eventually(check, what, WAIT_MS);
      return true;
    } catch {
      return false;
    }
  };
  const diskSha = async (name: string): Promise<string> => sha256(await readFile(join(root, name)));

  await page.goto(`${base}/`);

  t.test('the catalog lists every entry with its type, size, date and a count', async (t) => {
    await rowsAre(t, [VIDEO, VIDEO_2, SONG, PICTURE], 'all four, by name');
    t.match(await page.locator('#count').textContent(), /^4 files · \d+(\.\d+)? kB$/);
    const row = page.locator('#rows tr', { hasText: 'test pattern.webm' });
    t.equal(await row.getAttribute('data-type'), 'video');
    t.equal(await row.locator('td.type img').getAttribute('alt'), 'video');
    t.equal(await row.locator('td.name .folder').textContent(), 'films/', 'the folder as a path');
    t.equal(await row.locator('td.name .base').textContent(), 'test pattern.webm');
    const size = (await readFile(join(root, VIDEO))).length;
    t.match(await row.locator('td.size').textContent(), /^\d+(\.\d+)? kB$/, 'size in human units');
    t.equal((await row.locator('td.size').getAttribute('title'))?.replace(/\D/g, ''), String(size));
    t.equal(await row.locator('td.date').textContent(), '15 Jan 2026, 10:00');
    t.equal(await row.locator('time').getAttribute('datetime'), DATES[VIDEO]);
    const song = page.locator('#rows tr', { hasText: 'tone.ogg' });
    t.equal(await song.locator('td.type img').getAttribute('alt'), 'music');
    t.equal(await page.locator('#rows tr[data-type="picture"] img').getAttribute('alt'), 'picture');
  });

  t.test('sorting by each column', async (t) => {
    const header = (name: string) => page.locator(`th button[data-sort="${name}"]`);
    await header('date').click();
    await rowsAre(t, [VIDEO_2, PICTURE, VIDEO, SONG], 'date: newest first');
    t.equal(await page.locator('th.date').getAttribute('aria-sort'), 'descending');
    await header('date').click();
    await rowsAre(t, [SONG, VIDEO, PICTURE, VIDEO_2], 'date again: oldest first');
    await header('type').click();
    await rowsAre(t, [VIDEO, VIDEO_2, SONG, PICTURE], 'type: videos, music, pictures');
    await header('size').click();
    const sizes = await page
      .locator('#rows tr td.size')
      .evaluateAll((cells) =>
        cells.map((cell) => Number((cell.getAttribute('title') ?? '').replace(/\D/g, ''))),
      );
    t.same(
      sizes,
      [...sizes].sort((a, b) => b - a),
      'size: largest first',
    );
    await header('name').click();
    await header('name').click();
    await rowsAre(t, [PICTURE, SONG, VIDEO_2, VIDEO], 'name, twice: Z to A');
    await header('name').click();
    await rowsAre(t, [VIDEO, VIDEO_2, SONG, PICTURE], 'name: A to Z');
    t.equal(await page.locator('th.name').getAttribute('aria-sort'), 'ascending');
  });

  t.test('search narrows the list as you type', async (t) => {
    const search = page.locator('#search');
    await search.pressSequentially('p');
    await rowsAre(t, [VIDEO, VIDEO_2, PICTURE], '"p" (copy, pattern, pictures)');
    await search.pressSequentially('a');
    await rowsAre(t, [VIDEO, PICTURE], '"pa"');
    t.match(await page.locator('#count').textContent(), /^2 of 4 files · \d+(\.\d+)? kB$/);
    await search.pressSequentially('ttern.p');
    await rowsAre(t, [PICTURE], '"pattern.p"');
    await search.fill('');
    await search.pressSequentially('ZOË');
    await rowsAre(t, [VIDEO_2], 'case-insensitive, non-ASCII');
    await search.fill('nothing like this');
    await rowsAre(t, [], 'no match');
    t.match(await page.locator('#empty').textContent(), /No file matches/);
    t.ok(await page.locator('#empty').isVisible(), 'says so in words');
    await search.fill('');
    await rowsAre(t, [VIDEO, VIDEO_2, SONG, PICTURE], 'cleared: all again');
  });

  t.test('filter by type, and the playlist follows it', async (t) => {
    await page.locator('.types label', { hasText: 'Music' }).click();
    await rowsAre(t, [SONG], 'music only');
    const href = await page.locator('#playlist').getAttribute('href');
    t.equal(href, '/api/list?format=m3u&type=music');
    const playlist = await (await page.request.get(`${base}${href}`)).text();
    t.match(playlist, `${base}/media/music/tone.ogg`);
    t.notMatch(playlist, '.webm');
    await page.locator('.types label', { hasText: 'Pictures' }).click();
    await rowsAre(t, [PICTURE], 'pictures only');
    await page.locator('.types label', { hasText: 'All' }).click();
    await rowsAre(t, [VIDEO, VIDEO_2, SONG, PICTURE], 'all again');
    t.equal(await page.locator('#playlist').getAttribute('href'), '/api/list?format=m3u');
  });

  t.test(
    'Tab to a row and Enter plays the video; it advances, and seeks with ranges',
    async (t) => {
      await page.locator('#search').focus();
      let onRow = false;
      for (let i = 0; i < 8 && !onRow; i++) {
        await page.keyboard.press('Tab');
        onRow = await page.evaluate(() => {
          const active = (globalThis as unknown as InPage).document.activeElement;
          return active?.matches('#rows tr') ?? false;
        });
      }
      t.ok(onRow, 'Tab reaches a row');
      t.equal(
        await page.locator('#rows tr:focus').getAttribute('data-name'),
        VIDEO,
        'the first row',
      );
      await page.keyboard.press('Enter');
      await page.locator('.stage video').waitFor();
      t.equal(await page.locator('.player-title').textContent(), 'test pattern.webm');
      t.equal(await page.locator('.player-place').textContent(), '1 of 4');
      t.ok(await page.locator('.player-previous').isDisabled(), 'no previous for the first');
      t.ok(
        await waitUntil(async () => (await currentTime()) > 0.3, 'playback'),
        'currentTime advances',
      );
      t.equal(
        await page.locator('.player-download').getAttribute('href'),
        '/media/films/test%20pattern.webm?download',
      );
      const download = await page.request.head(`${base}/media/films/test%20pattern.webm?download`);
      t.match(download.headers()['content-disposition'], /^attachment/);

      // Seek, as the seek bar does: the browser asks for ranges and plays on from there.
      await page.locator('.stage video').evaluate(
        (video: InPageMedia & InPageElement) =>
          new Promise<void>((resolve) => {
            video.addEventListener('seeked', () => resolve(), { once: true });
            video.currentTime = 2.5;
          }),
      );
      const after = await currentTime();
      t.ok(after >= 2.5 && after < 3.5, `seeked to 2.5 s (at ${after})`);
      t.ok(await waitUntil(async () => (await currentTime()) > after + 0.2, 'play on'), 'plays on');
      t.ok(
        responses.some(
          (r) => r.url.endsWith('/media/films/test%20pattern.webm') && r.status === 206 && r.range,
        ),
        'the video came as 206 answers to Range requests',
      );
    },
  );

  t.test('previous and next walk the list shown; Escape closes', async (t) => {
    await page.locator('.player-next').click();
    await page.locator('.stage video').waitFor();
    t.equal(await page.locator('.player-title').textContent(), 'Zoë #2 [copy].webm');
    t.equal(await page.locator('.player-folder').textContent(), 'films');
    t.equal(await page.locator('.player-place').textContent(), '2 of 4');
    t.equal(
      await page.locator('.stage video').getAttribute('src'),
      '/media/films/Zo%C3%AB%20%232%20%5Bcopy%5D.webm',
      'each segment percent-encoded',
    );
    t.ok(
      await waitUntil(async () => (await currentTime()) > 0.3, 'playback'),
      'that name plays too',
    );
    // The arrow keys, with the focus on the player's buttons.
    await page.keyboard.press('ArrowRight');
    await page.locator('.stage audio').waitFor();
    t.equal(await page.locator('.player-title').textContent(), 'tone.ogg');
    t.ok(
      await waitUntil(async () => (await currentTime('.stage audio')) > 0.2, 'song'),
      'the song plays',
    );
    await page.keyboard.press('ArrowRight');
    await page.locator('.stage img').waitFor();
    t.ok(
      await waitUntil(
        async () =>
          (await page.locator('.stage img').evaluate((img: InPageMedia) => img.naturalWidth)) ===
          160,
        'picture',
      ),
      'the picture shows',
    );
    t.equal(await page.locator('.player-place').textContent(), '4 of 4');
    t.ok(await page.locator('.player-next').isDisabled(), 'no next after the last');
    await page.keyboard.press('ArrowLeft');
    await page.locator('.stage audio').waitFor();
    t.equal(await page.locator('.player-title').textContent(), 'tone.ogg', 'back to the song');
    t.equal(await page.locator('#rows tr.playing').getAttribute('data-name'), SONG, 'row marked');

    // In a filtered list, next stays in it.
    await page.locator('.types label', { hasText: 'Videos' }).click();
    await rowsAre(t, [VIDEO, VIDEO_2], 'videos only');
    t.equal(await page.locator('.player-place').textContent(), 'not in the list shown');
    await page.locator('.player-next').click();
    t.equal(await page.locator('.player-title').textContent(), 'test pattern.webm', 'first video');
    await page.locator('.player-next').click();
    t.equal(await page.locator('.player-place').textContent(), '2 of 2');
    await page.locator('.types label', { hasText: 'All' }).click();

    await page.locator('.player-previous').focus();
    await page.keyboard.press('Escape');
    t.ok(await page.locator('#player').isHidden(), 'Escape closed the player');
    t.equal(await page.locator('.stage video, .stage audio').count(), 0, 'nothing plays on');
    t.equal(
      await page.locator('#rows tr:focus').getAttribute('data-name'),
      VIDEO_2,
      'the focus is back on its row',
    );
    // The arrows move between rows; Space plays too.
    await page.keyboard.press('ArrowDown');
    t.equal(await page.locator('#rows tr:focus').getAttribute('data-name'), SONG, 'ArrowDown');
    await page.keyboard.press('Space');
    await page.locator('.stage audio').waitFor();
    t.equal(await page.locator('.player-title').textContent(), 'tone.ogg', 'Space played it');
    await page.keyboard.press('Escape');
    t.ok(await page.locator('#player').isHidden(), 'closed again');
  });

  /** Uploads through the file input and waits (bounded) until every file has an outcome. */
  const pick = async (files: { name: string; buffer: Buffer; mimeType: string }[]) => {
    const before = await page.locator('#uploads li').count();
    await page.setInputFiles('#files', files);
    const done = page.locator(
      '#uploads li:not([data-state="queued"]):not([data-state="sending"]):not([data-state="checking"])',
    );
    await waitUntil(async () => (await done.count()) >= before + files.length, 'uploads done');
  };
  const upload = (name: string) => page.locator('#uploads li', { hasText: name }).first();

  const clip = randomBytes(2_500_000);
  t.test(
    'upload by the file picker: progress, speed, a verified receipt, listed, on disk',
    async (t) => {
      await page.locator('#target-folder').fill('uploads/new');
      await pick([{ name: 'random clip.webm', mimeType: 'video/webm', buffer: clip }]);
      const item = upload('uploads/new/random clip.webm');
      t.equal(await item.getAttribute('data-state'), 'verified');
      t.match(await item.locator('.upload-outcome').textContent(), /verified: the SHA-256 matches/);
      t.equal(
        await item
          .locator('progress')
          .evaluate((bar: { value: number; max: number }) => bar.value / bar.max),
        1,
        'bar full',
      );
      t.match(
        await item.locator('.upload-progress').textContent(),
        /^2\.50 MB in .* · [\d.]+ [kMG]?B\/s · 100%$/,
      );
      t.match(await item.locator('.upload-detail').textContent(), `server SHA-256 ${sha256(clip)}`);
      await rowsAre(
        t,
        [VIDEO, VIDEO_2, SONG, PICTURE, 'uploads/new/random clip.webm'],
        'the list was refreshed',
      );
      t.equal(await diskSha('uploads/new/random clip.webm'), sha256(clip), 'the bytes on disk');
    },
  );

  t.test('the same name again: the refusal in words', async (t) => {
    await pick([{ name: 'random clip.webm', mimeType: 'video/webm', buffer: randomBytes(1000) }]);
    const item = page.locator('#uploads li').first();
    t.equal(await item.getAttribute('data-state'), 'refused');
    t.equal(
      await item.locator('.upload-outcome').textContent(),
      'Refused: a file of that name already exists.',
    );
    t.match(await item.locator('.upload-detail').textContent(), /^EXISTS/);
    t.equal(
      await diskSha('uploads/new/random clip.webm'),
      sha256(clip),
      'the first one is untouched',
    );
  });

  const png = await readFile(join(root, PICTURE));
  t.test('drag and drop of several files, into a typed folder', async (t) => {
    const TWO = 'cafe\u0301.png'; // NFD: the page must send it as it is, not normalised
    await page.locator('#target-folder').fill('dropped');
    const other = Buffer.concat([png, randomBytes(100)]);
    await page.locator('#dropzone').evaluate(
      (zone: InPageElement, files: { name: string; bytes: number[] }[]) => {
        const w = globalThis as unknown as InPage;
        const transfer = new w.DataTransfer();
        for (const { name, bytes } of files) {
          transfer.items.add(new w.File([new Uint8Array(bytes)], name, { type: 'image/png' }));
        }
        for (const type of ['dragenter', 'dragover', 'drop']) {
          zone.dispatchEvent(
            new w.DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer }),
          );
        }
      },
      [
        { name: 'one.png', bytes: [...png] },
        { name: TWO, bytes: [...other] },
      ],
    );
    const one = upload('dropped/one.png');
    const two = upload(`dropped/${TWO}`);
    await waitUntil(async () => (await two.getAttribute('data-state')) === 'verified', 'two done');
    t.equal(await one.getAttribute('data-state'), 'verified');
    t.equal(await two.getAttribute('data-state'), 'verified');
    t.notOk(
      await page.evaluate(() =>
        (globalThis as unknown as InPage).document.body.matches('.dragging'),
      ),
      'the overlay is gone',
    );
    await waitUntil(async () => (await rowNames()).includes(`dropped/${TWO}`), 'listed');
    t.ok((await rowNames()).includes('dropped/one.png'), 'one.png listed');
    t.ok((await rowNames()).includes(`dropped/${TWO}`), 'the other listed');
    t.equal(await diskSha('dropped/one.png'), sha256(png));
    t.equal(await diskSha(`dropped/${TWO}`), sha256(other));
    // The name is stored as the browser gave it: decomposed, as macOS spells it.
    t.same(await readdir(join(root, 'dropped')), ['cafe\u0301.png', 'one.png'].sort());
  });

  t.test(
    '"not verified" when the page cannot hash, a clear failure when hashes differ',
    async (t) => {
      await page.locator('#target-folder').fill('');
      await page.route('**/assets/hash-worker.js', (route) => route.abort());
      await pick([{ name: 'unhashed.png', mimeType: 'image/png', buffer: png }]);
      await page.unroute('**/assets/hash-worker.js');
      const unhashed = upload('unhashed.png');
      t.equal(await unhashed.getAttribute('data-state'), 'unverified');
      t.match(await unhashed.locator('.upload-outcome').textContent(), /not verified/);
      t.equal(await diskSha('unhashed.png'), sha256(png), 'stored all the same');

      // A receipt that does not match what the page hashed (a server that stored other bytes).
      await page.route('**/media/mismatch.png', (route) =>
        route.fulfill({
          status: 201,
          contentType: 'application/json',
          body: JSON.stringify({ name: 'mismatch.png', size: png.length, sha256: '0'.repeat(64) }),
        }),
      );
      await pick([{ name: 'mismatch.png', mimeType: 'image/png', buffer: png }]);
      await page.unroute('**/media/mismatch.png');
      const mismatch = upload('mismatch.png');
      t.equal(await mismatch.getAttribute('data-state'), 'mismatch');
      t.match(await mismatch.locator('.upload-outcome').textContent(), /does NOT match/);
      t.match(
        await mismatch.locator('.upload-detail').textContent(),
        sha256(png),
        'shows both hashes',
      );
    },
  );

  t.test('a video playing, and the screenshot', async (t) => {
    await page.locator('#rows tr', { hasText: 'test pattern.webm' }).click();
    t.ok(await waitUntil(async () => (await currentTime()) > 0.2, 'playback'), 'plays on click');
    // A still frame for the picture: paused at 2 s.
    await page.locator('.stage video').evaluate(
      (video: InPageMedia & InPageElement) =>
        new Promise<void>((resolve) => {
          video.pause();
          video.addEventListener('seeked', () => resolve(), { once: true });
          video.currentTime = 2;
        }),
    );
    await page.locator('#rows tr', { hasText: 'test pattern.webm' }).focus();
    await mkdir(dirname(SHOT), { recursive: true });
    await page.screenshot({ path: SHOT, fullPage: true });
    t.ok(existsSync(SHOT), SHOT);
  });

  t.test('an empty library says so; a refused upload there says why', async (t) => {
    const empty = await context.newPage();
    watch(empty);
    empty.setDefaultTimeout(WAIT_MS);
    await empty.goto(`${smallBase}/`);
    await empty.locator('#empty').waitFor({ state: 'visible' });
    t.match(await empty.locator('#empty').textContent(), /The library is empty/);
    t.equal(await empty.locator('#count').textContent(), '0 files · 0 B');
    t.ok(await empty.locator('#catalog').isHidden(), 'no empty table');
    await empty.setInputFiles('#files', { name: 'big.png', mimeType: 'image/png', buffer: png });
    const item = empty.locator('#uploads li').first();
    await waitUntil(async () => (await item.getAttribute('data-state')) === 'refused', 'refused');
    t.equal(
      await item.locator('.upload-outcome').textContent(),
      'Refused: the file is larger than this server accepts.',
    );
    await empty.setInputFiles('#files', {
      name: 'notes.txt',
      mimeType: 'text/plain',
      buffer: Buffer.from('hi'),
    });
    const text = empty.locator('#uploads li', { hasText: 'notes.txt' });
    await waitUntil(async () => (await text.getAttribute('data-state')) === 'refused', 'refused');
    t.match(
      await text.locator('.upload-outcome').textContent(),
      /not a kind of file the library keeps/,
    );
    await empty.close();
  });

  t.test('nothing but the server was asked for, and the page broke no rule', async (t) => {
    const foreign = requests.filter(
      (url) => !url.startsWith(`${base}/`) && !url.startsWith(`${smallBase}/`),
    );
    t.same(foreign, [], 'no request to another host');
    t.ok(requests.length > 20, `${requests.length} requests recorded`);
    // The refused uploads (409, 413, 415) are logged as failed loads; nothing else may be.
    const unexpected = consoleErrors.filter((text) => !/status of (409|413|415)/.test(text));
    t.same(unexpected, [], 'no console errors (no CSP violation, no script error)');
  });

  // ---- accounts (access.md): each in a browser context of its own, with its own console ----

  t.test('a server without accounts says nothing about signing in', async (t) => {
    t.ok(await page.locator('#account').isHidden(), 'no account line');
    t.equal(await page.locator('#account').textContent(), '');
  });

  /** A context for a server with accounts (with Basic credentials if given) and its page. */
  const accountsPage = async (
    t: Tap,
    credentials?: { username: string; password: string },
  ): Promise<{ page: Page; errors: string[] }> => {
    const own = await browser.newContext({
      locale: 'en-GB',
      timezoneId: 'UTC',
      colorScheme: 'light',
      viewport: { width: 1280, height: 900 },
      httpCredentials: credentials,
    });
    t.teardown(() => own.close());
    const errors: string[] = [];
    const opened = await own.newPage();
    opened.setDefaultTimeout(WAIT_MS);
    if (!credentials) {
      // A 401 makes a browser ask for a name and password; headless, nothing answers and the
      // request hangs. Here the person dismisses the dialog: the page then gets the 401.
      const cdp = await own.newCDPSession(opened);
      cdp.on('Fetch.requestPaused', ({ requestId }) => {
        cdp.send('Fetch.continueRequest', { requestId }).catch(() => undefined);
      });
      cdp.on('Fetch.authRequired', ({ requestId }) => {
        const authChallengeResponse = { response: 'CancelAuth' as const };
        cdp.send('Fetch.continueWithAuth', { requestId, authChallengeResponse }).catch(() => {});
      });
      await cdp.send('Fetch.enable', { handleAuthRequests: true });
    }
    opened.on('console', (message) => {
      if (message.type() === 'error') errors.push(message.text());
    });
    opened.on('pageerror', (error) => errors.push(`page error: ${error.message}`));
    return { page: opened, errors };
  };
  const namesOn = (on: Page): Promise<string[]> =>
    on
      .locator('#rows tr')
      .evaluateAll((rows) => rows.map((row) => row.getAttribute('data-name') ?? ''));
  const listedOn = async (on: Page, expected: string[]): Promise<string[]> => {
    await waitUntil(async () => same(await namesOn(on), expected), 'listed');
    return namesOn(on);
  };
  /** Uploads one file through the picker; resolves with its list item once it has an outcome. */
  const uploadOn = async (on: Page, folder: string, name: string, buffer: Buffer) => {
    await on.locator('#target-folder').fill(folder);
    await on.setInputFiles('#files', { name, mimeType: 'image/png', buffer });
    const item = on.locator('#uploads li', { hasText: `${folder}/${name}` }).first();
    await waitUntil(
      async () =>
        !['queued', 'sending', 'checking', null].includes(await item.getAttribute('data-state')),
      'upload done',
    );
    return item;
  };
  /** Failed loads the browser logs for refused requests; nothing else may be in the console. */
  const onlyRefusals = (errors: string[], statuses: string): string[] =>
    errors.filter((text) => !new RegExp(`status of (${statuses})`).test(text));

  t.test('with accounts, not signed in: says so; lists and plays what anonymous may', async (t) => {
    const { page: anon, errors } = await accountsPage(t);
    await anon.goto(`${sharedBase}/`);
    const account = anon.locator('#account');
    await account.locator('a').waitFor();
    t.equal(await account.textContent(), 'Not signed in · Sign in');
    t.equal(await account.locator('a').getAttribute('href'), '/api/login', 'Sign in: /api/login');
    t.same(await listedOn(anon, [SONG]), [SONG], "only anonymous's share is listed");
    await anon.locator('#rows tr', { hasText: 'tone.ogg' }).click();
    t.ok(
      await waitUntil(
        () =>
          anon.locator('.stage audio').evaluate((audio: InPageMedia) => audio.currentTime > 0.2),
        'playback',
      ),
      'the song plays',
    );
    await anon.keyboard.press('Escape');

    const item = await uploadOn(anon, 'uploads', 'anonymous.png', png);
    t.equal(await item.getAttribute('data-state'), 'refused');
    t.equal(
      await item.locator('.upload-outcome').textContent(),
      'Refused: this needs an account: sign in first.',
    );
    t.match(await item.locator('.upload-detail').textContent(), /^AUTH_REQUIRED/);
    t.notOk(existsSync(join(accountsRoot, 'uploads/anonymous.png')), 'nothing stored');
    t.same(onlyRefusals(errors, '401'), [], 'no console errors but the refused upload');
  });

  t.test('with accounts, anonymous may read nothing: the page says to sign in', async (t) => {
    const { page: anon, errors } = await accountsPage(t);
    await anon.goto(`${closedBase}/`);
    await anon.locator('#empty').waitFor({ state: 'visible' });
    t.equal(
      await anon.locator('#empty').textContent(),
      'The library could not be loaded (this needs an account: sign in first). ' +
        'Sign in (at the top of the page) to see it.',
    );
    t.equal(await anon.locator('#count').textContent(), 'The library could not be loaded.');
    await anon.locator('#account a').waitFor();
    t.equal(await anon.locator('#account').textContent(), 'Not signed in · Sign in');
    t.same(onlyRefusals(errors, '401'), [], 'no console errors but the refused list');
  });

  t.test(
    'signed in with HTTP Basic: shows the account; lists, plays and uploads within its rules',
    async (t) => {
      const { page: alice, errors } = await accountsPage(t, {
        username: 'alice',
        password: ALICE_PASSWORD,
      });
      await alice.goto(`${closedBase}/`);
      // The browser sends a password only when asked: the Sign in link asks (by the keyboard).
      await alice.locator('#account a').focus();
      await alice.keyboard.press('Enter');
      await alice.waitForURL(`${closedBase}/`);
      await alice.locator('#account strong').waitFor();
      t.equal(await alice.locator('#account').textContent(), 'Signed in as alice');
      t.equal(await alice.locator('#account strong').textContent(), 'alice');
      t.same(await listedOn(alice, [VIDEO, SONG, PICTURE]), [VIDEO, SONG, PICTURE], 'all three');

      await alice.locator('#rows tr', { hasText: 'test pattern.webm' }).click();
      t.ok(
        await waitUntil(
          () =>
            alice.locator('.stage video').evaluate((video: InPageMedia) => video.currentTime > 0.3),
          'playback',
        ),
        'the video plays',
      );
      await alice.keyboard.press('Escape');

      const stored = await uploadOn(alice, 'uploads', 'by alice.png', png);
      t.equal(await stored.getAttribute('data-state'), 'verified', 'uploads/ is hers to write');
      t.equal(sha256(await readFile(join(accountsRoot, 'uploads/by alice.png'))), sha256(png));
      t.same(
        await listedOn(alice, [VIDEO, SONG, PICTURE, 'uploads/by alice.png']),
        [VIDEO, SONG, PICTURE, 'uploads/by alice.png'],
        'listed after the upload',
      );
      t.equal(await alice.locator('#account').textContent(), 'Signed in as alice', 'still');

      const denied = await uploadOn(alice, 'films', 'not here.png', png);
      t.equal(await denied.getAttribute('data-state'), 'refused');
      t.equal(
        await denied.locator('.upload-outcome').textContent(),
        'Refused: your account is not allowed to do this in this folder.',
      );
      t.match(await denied.locator('.upload-detail').textContent(), /^DENIED/);
      t.notOk(existsSync(join(accountsRoot, 'films/not here.png')), 'nothing stored');

      // A file refused after the list was loaded (the rules changed meanwhile): the player
      // says why, in words, rather than blaming the browser.
      await alice.route('**/media/films/test%20pattern.webm', (route) =>
        route.fulfill({
          status: 403,
          contentType: 'application/json',
          body: JSON.stringify({ code: 'DENIED', message: 'not for this account' }),
        }),
      );
      await alice.locator('#rows tr', { hasText: 'test pattern.webm' }).click();
      const problem = alice.locator('.player-problem');
      await waitUntil(
        async () => /could not be loaded/.test((await problem.textContent()) ?? ''),
        'why',
      );
      t.equal(
        await problem.textContent(),
        'This video could not be loaded: your account is not allowed to do this in this folder.',
      );
      await alice.unroute('**/media/films/test%20pattern.webm');
      await alice.keyboard.press('Escape');
      t.same(onlyRefusals(errors, '401|403'), [], 'no console errors but refusals');
    },
  );
}

function same(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((value, i) => value === b[i]);
}
