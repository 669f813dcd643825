import { existsSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Test } from 'tap'
import { chromium } from 'playwright-core'
import type { Browser } from 'playwright-core'

/** Debian's `chromium` package; never a browser that a tool downloads. */
export const CHROMIUM = process.env.GATEHOUSE_CHROMIUM ?? '/usr/bin/chromium'

// What works as root on a machine without a display or GPU; --no-sandbox
// because Chromium refuses to run sandboxed as root.
const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'
]

/**
 * Why the browser tests cannot run here, or `undefined` when they can. With
 * GATEHOUSE_REQUIRE_BROWSER=1 (CI) a missing browser is a failure, not a skip.
 */
export function browserMissing (): string | undefined {
  if (existsSync(CHROMIUM)) return undefined
  return `no Chromium at ${CHROMIUM}: install chromium: apt-get install -y chromium`
}

/** Headless Chromium with a fresh profile (Playwright's temporary one), closed on teardown. */
export async function launchChromium (t: Test): Promise<Browser> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS })
  t.teardown(() => browser.close())
  return browser
}

/** Serves one HTML page at `/` on 127.0.0.1:0 and returns its origin, closed on teardown. */
export async function servePage (t: Test, html: string): Promise<string> {
  const server = createServer((req, res) => {
    if (req.url !== '/') {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(html) }).end(html)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}
