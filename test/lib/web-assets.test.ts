/**
 * The web page's files alone: a temporary folder in, URL path → body, type and ETag out.
 */
import t, { type Test } from 'tap';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadWebAssets } from '../../lib/web-assets.js';

async function tempFolder(t: Test): Promise<string> {
  const folder = await mkdtemp(join(tmpdir(), 'ioe-web-assets-'));
  t.teardown(() => rm(folder, { recursive: true, force: true }));
  return folder;
}

/** A page folder with the given files (name → content). */
async function page(t: Test, files: Record<string, string | Buffer>): Promise<string> {
  const folder = await tempFolder(t);
  for (const [name, content] of Object.entries(files)) {
    await mkdir(join(folder, name, '..'), { recursive: true });
    await writeFile(join(folder, name), content);
  }
  return folder;
}

const INDEX = '<!doctype html><title>IOE</title><script src="/assets/app.js"></script>';

t.test('index.html at /, every other file at /assets/<name>', async (t) => {
  const folder = await page(t, {
    'index.html': INDEX,
    'app.js': 'console.log(1);',
    'style.css': 'body{}',
  });
  const assets = await loadWebAssets({ page: folder });
  t.same([...assets.keys()].sort(), ['/', '/assets/app.js', '/assets/style.css']);
  t.equal(assets.get('/')?.body.toString(), INDEX, 'the page itself');
  t.equal(assets.get('/assets/app.js')?.body.toString(), 'console.log(1);');
  t.ok(Buffer.isBuffer(assets.get('/assets/style.css')?.body), 'bodies are Buffers');
  t.notOk(assets.has('/index.html'), 'the page is not also an asset');
  t.notOk(assets.has('/assets/index.html'));
});

t.test('hidden files, folders and links to nowhere are skipped', async (t) => {
  const folder = await page(t, {
    'index.html': INDEX,
    '.env': 'SECRET=1',
    '.app.js.swp': 'x',
    'sub/inner.js': 'nested',
    'app.js': 'ok',
  });
  await symlink(join(folder, 'missing.js'), join(folder, 'dangling.js'));
  const assets = await loadWebAssets({ page: folder });
  t.same([...assets.keys()].sort(), ['/', '/assets/app.js']);
  t.notOk(assets.has('/assets/.env'), 'a dotfile is never served');
  t.notOk(assets.has('/assets/sub'), 'a folder is not a file');
  t.notOk(assets.has('/assets/sub/inner.js'), 'folders are not walked');
});

t.test('a folder without index.html: an error naming the folder', async (t) => {
  const folder = await page(t, { 'app.js': 'x', 'Index.html': 'wrong case' });
  await t.rejects(loadWebAssets({ page: folder }), { message: /index\.html/ });
  await t.rejects(loadWebAssets({ page: folder }), { message: new RegExp(folder) });
  const hidden = await page(t, { '.index.html': 'x' });
  await t.rejects(loadWebAssets({ page: hidden }), /index\.html/);
  const missing = join(await tempFolder(t), 'nope');
  await t.rejects(loadWebAssets({ page: missing }), { code: 'ENOENT' }, 'no folder at all');
});

t.test('extras: more files under /assets/, from anywhere', async (t) => {
  const folder = await page(t, { 'index.html': INDEX, 'app.js': 'mine' });
  const vendor = await page(t, { 'lib.min.js': 'vendored();', 'theme.css': 'a{}' });
  const assets = await loadWebAssets({
    page: folder,
    extra: {
      'vendor/lib.js': join(vendor, 'lib.min.js'),
      'theme.css': join(vendor, 'theme.css'),
    },
  });
  t.same(
    [...assets.keys()].sort(),
    ['/', '/assets/app.js', '/assets/theme.css', '/assets/vendor/lib.js'].sort(),
  );
  t.equal(assets.get('/assets/vendor/lib.js')?.body.toString(), 'vendored();');
  t.equal(assets.get('/assets/vendor/lib.js')?.contentType, 'text/javascript; charset=utf-8');
  t.equal(assets.get('/assets/theme.css')?.contentType, 'text/css; charset=utf-8');
  await t.rejects(
    loadWebAssets({ page: folder, extra: { 'x.js': join(vendor, 'missing.js') } }),
    { code: 'ENOENT' },
    'a missing extra is an error, not a silent 404 later',
  );
});

t.test('content types by extension', async (t) => {
  const folder = await page(t, {
    'index.html': INDEX,
    'a.css': '',
    'a.js': '',
    'a.svg': '<svg/>',
    'a.png': Buffer.from([0x89, 0x50, 0x4e, 0x47]),
    'a.ico': Buffer.from([0, 0, 1, 0]),
    'a.json': '{}',
    'a.wasm': '',
    README: '',
  });
  const types = Object.fromEntries(
    [...(await loadWebAssets({ page: folder }))].map(([path, asset]) => [path, asset.contentType]),
  );
  t.same(types, {
    '/': 'text/html; charset=utf-8',
    '/assets/a.css': 'text/css; charset=utf-8',
    '/assets/a.js': 'text/javascript; charset=utf-8',
    '/assets/a.svg': 'image/svg+xml',
    '/assets/a.png': 'image/png',
    '/assets/a.ico': 'image/x-icon',
    '/assets/a.json': 'application/json',
    '/assets/a.wasm': 'application/octet-stream',
    '/assets/README': 'application/octet-stream',
  });
});

t.test('ETags: strong, from the bytes', async (t) => {
  const folder = await page(t, {
    'index.html': INDEX,
    'a.js': 'same',
    'b.js': 'same',
    'c.js': 'other',
    'empty.css': '',
  });
  const first = await loadWebAssets({ page: folder });
  const etag = (path: string): string | undefined => first.get(path)?.etag;
  t.match(etag('/'), /^"[A-Za-z0-9_-]+"$/, 'quoted, strong');
  t.equal(etag('/assets/a.js'), etag('/assets/b.js'), 'the same bytes, the same tag');
  t.not(etag('/assets/a.js'), etag('/assets/c.js'), 'other bytes, another tag');
  t.match(etag('/assets/empty.css'), /^"[A-Za-z0-9_-]+"$/, 'an empty file has one too');

  const again = await loadWebAssets({ page: folder });
  t.equal(again.get('/')?.etag, etag('/'), 'stable across loads');

  await writeFile(join(folder, 'index.html'), INDEX + ' ');
  await writeFile(join(folder, 'a.js'), 'changed');
  const changed = await loadWebAssets({ page: folder });
  t.not(changed.get('/')?.etag, etag('/'), 'the page changed: its tag changed');
  t.not(changed.get('/assets/a.js')?.etag, etag('/assets/a.js'));
  t.equal(changed.get('/assets/c.js')?.etag, etag('/assets/c.js'), 'an unchanged file keeps it');
  t.equal(first.get('/')?.body.toString(), INDEX, 'loaded assets are not reread');
});
