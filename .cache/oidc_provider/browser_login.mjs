// Signs in to a zeroserve site behind the oidc plugin with headless Chromium, then signs out.
// Usage: node browser_login.mjs URL LOGIN  (HOME holds an NSS database trusting the test CA)
// Prints one JSON line: the email the page showed, whether the session cookie was set and then
// cleared, and where a protected page sends the browser after the logout.
import { chromium } from 'playwright-core';

const [url, login] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const sessionCookie = async () => (await context.cookies()).find((c) => c.name === '__zs_oidc_session');
  await page.goto(url);
  const loginPage = page.url();
  await page.fill('input[name=login]', login);
  await page.fill('input[name=password]', 'secret');
  await page.click('[type=submit]');
  await page.waitForURL(url);
  const email = await page.textContent('#email');
  const session = await sessionCookie();
  await page.click('#logout');
  await page.waitForSelector('[type=submit]');  // the provider asks to confirm the sign-out
  await page.click('[type=submit]');
  await page.waitForLoadState('load');
  const afterLogout = await sessionCookie();
  await page.goto(url);
  console.log(JSON.stringify({
    loginPage, email, sessionSecure: session?.secure, sessionHttpOnly: session?.httpOnly,
    sessionSameSite: session?.sameSite, sessionAfterLogout: afterLogout ?? null, afterLogoutUrl: page.url(),
  }));
} catch (error) {
  const pages = browser.contexts().flatMap((c) => c.pages());
  for (const page of pages) {
    console.error(`at ${page.url()}: ${(await page.content()).slice(0, 2000)}`);
  }
  throw error;
} finally {
  await browser.close();
}
