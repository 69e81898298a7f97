// @ts-check
/**
 * Who is signed in, from /api/whoami, at the top of the page: "Signed in as alice", or "Not
 * signed in · Sign in" on a server with accounts; nothing at all on a server without any.
 * Signing in is the browser's own (HTTP Basic): the link opens /api/login, where the browser
 * asks for a name and password, and which then leads back to the page. (Basic has no signing
 * out: the browser forgets the password when it is closed.)
 */
import { SIGN_IN_CODES, errorCodeOf, errorInWords } from './format.js';

/**
 * What to show: an account's name ('anonymous' for none), or why the server refused the
 * browser's credentials.
 * @typedef {{ name: string } | { refusal: string, code: string | undefined }} Account
 */

/** @returns {Promise<Account | undefined>} undefined: no accounts, or no answer */
async function fetchAccount() {
  try {
    const response = await fetch('/api/whoami', { cache: 'no-store' });
    if (!response.ok) {
      const code = await errorCodeOf(response);
      return { refusal: errorInWords(code, response.status), code };
    }
    /** @type {{ name: string, accounts: boolean }} */
    const who = await response.json();
    return who.accounts ? { name: who.name } : undefined;
  } catch {
    return undefined; // the catalog says it when the server cannot be reached
  }
}

/** @param {string} href @param {string} text */
function link(href, text) {
  const a = document.createElement('a');
  a.href = href;
  a.textContent = text;
  return a;
}

/**
 * Asks the server who this browser is and shows it in `element`; redraws only what changed,
 * so a screen reader hears a change and not every refresh.
 * @param {HTMLElement} element
 */
export async function showAccount(element) {
  const account = await fetchAccount();
  const key = JSON.stringify(account ?? null);
  if (element.dataset.shown === key) return;
  element.dataset.shown = key;
  element.hidden = account === undefined;
  if (!account) {
    element.replaceChildren();
  } else if ('refusal' in account) {
    element.replaceChildren(`Not signed in: ${account.refusal}`);
    if (SIGN_IN_CODES.includes(account.code ?? '')) {
      element.append(' · ', link('/api/login', 'Sign in again'));
    }
  } else if (account.name === 'anonymous') {
    element.replaceChildren('Not signed in · ', link('/api/login', 'Sign in'));
  } else {
    const name = document.createElement('strong');
    name.textContent = account.name;
    element.replaceChildren('Signed in as ', name);
  }
}
