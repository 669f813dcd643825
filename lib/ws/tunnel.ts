import { WebSocket } from 'ws'
import type { RawData } from 'ws'
import type { WebSocketContext, WebSocketHookResult, WebSocketMessage, WebSocketMessageHook } from '../types.js'
import type { ResolvedWebSocket } from './options.js'

// Async hooks still running on one direction before reading from it pauses.
const MAX_PENDING_HOOKS = 64
// With a clock tolerance a token outlives its `exp`: check again this often.
const EXPIRY_RECHECK_MS = 1000
const MAX_TIMER_MS = 2 ** 31 - 1
const MAX_REASON_BYTES = 123

/**
 * The code to send on after a peer closed with `code`: the same when it may
 * be sent; 1000 for "no code" (1005); 1011 for codes that describe a local
 * condition (1006 abnormal drop, 1015 TLS) or are invalid.
 */
export function forwardCode (code: number): number {
  if (code === 1005) return 1000
  const sendable = (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1006) || (code >= 3000 && code <= 4999)
  return sendable ? code : 1011
}

/**
 * The code ws closed a peer with after a protocol error: its own close event
 * says 1006 because it never reads the peer's reply.
 */
function protocolErrorCode (err: Error): number | undefined {
  const code = (err as { code?: unknown }).code
  if (code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') return 1009
  if (code === 'WS_ERR_INVALID_UTF8') return 1007
  return typeof code === 'string' && code.startsWith('WS_ERR_') ? 1002 : undefined
}

function closeSocket (socket: WebSocket, code: number, reason: string | Buffer): void {
  if (socket.readyState === WebSocket.OPEN) {
    // A paused socket would never read the peer's close reply.
    socket.resume()
    socket.close(code, reason)
  } else if (socket.readyState === WebSocket.CONNECTING) {
    socket.terminate()
  }
}

function isThenable (value: unknown): value is PromiseLike<WebSocketHookResult> {
  return typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function'
}

// binaryType is 'nodebuffer', so a message is always one Buffer.
function asBuffer (data: RawData): Buffer {
  return data as Buffer
}

/** Everything a tunnel needs besides the two sockets. */
export interface TunnelOptions {
  readonly settings: ResolvedWebSocket
  readonly context: Omit<WebSocketContext<any>, 'protocol' | 'close'>
  /** When the caller's token must be checked again (ms since epoch); `undefined` for public targets. */
  readonly expiresAt: number | undefined
  /** True while the caller's token is still accepted (clock tolerance). */
  readonly tokenValid: () => boolean
  /** Metrics and access log, when on: told once the tunnel is over. */
  readonly observe?: { closed: (code: number) => void } | undefined
}

/** One direction: messages from `from` go to `to`, through the hook. */
class Relay {
  paused = false
  private pending = 0
  private tail: Promise<void> | undefined

  constructor (
    private readonly tunnel: Tunnel,
    private readonly from: WebSocket,
    private readonly to: WebSocket,
    private readonly hook: WebSocketMessageHook<any> | undefined
  ) {
    from.on('message', this.onMessage)
  }

  private readonly onMessage = (raw: RawData, binary: boolean): void => {
    const data = asBuffer(raw)
    this.tunnel.activity()
    if (data.length > this.tunnel.settings.maxPayload) {
      closeSocket(this.from, 1009, 'Message too big')
      return
    }
    if (this.hook === undefined) {
      this.send(data, binary)
      return
    }
    const message: WebSocketMessage = binary ? { binary, data } : { binary, data: data.toString('utf8') }
    let result: WebSocketHookResult | PromiseLike<WebSocketHookResult>
    try {
      result = this.hook(message, this.tunnel.context)
    } catch (err) {
      this.tunnel.fail(err)
      return
    }
    if (this.tail === undefined && !isThenable(result)) {
      this.deliver(result, data, binary)
      return
    }
    // Results leave in arrival order, whatever order the hooks settle in.
    this.pending++
    this.flow()
    const current = (this.tail ?? Promise.resolve())
      .then(() => result)
      .then((settled) => { this.deliver(settled, data, binary) }, (err: unknown) => { this.tunnel.fail(err) })
      .then(() => {
        this.pending--
        if (this.tail === current) this.tail = undefined
        this.flow()
      })
    this.tail = current
  }

  private deliver (result: WebSocketHookResult, data: Buffer, binary: boolean): void {
    // Runs in a socket's 'message' event or at the end of a promise chain
    // nobody awaits: a throw (a hook returning something ws cannot send) must
    // close this tunnel, not reach the process.
    try {
      if (result === null) return
      if (result === undefined) this.send(data, binary)
      else if (typeof result === 'string') this.send(result, false)
      else this.send(result, true)
    } catch (err) {
      this.tunnel.fail(err)
    }
  }

  private send (data: Buffer | string, binary: boolean): void {
    if (this.to.readyState !== WebSocket.OPEN) return
    this.to.send(data, { binary }, this.flow)
    this.flow()
  }

  /** Pauses reading `from` while `to` holds more than the high-water mark or hooks pile up. */
  readonly flow = (): void => {
    const stop = this.to.bufferedAmount > this.tunnel.settings.highWaterMark || this.pending >= MAX_PENDING_HOOKS
    if (stop === this.paused) return
    if (stop && this.from.readyState !== WebSocket.OPEN) return
    this.paused = stop
    if (stop) this.from.pause()
    else this.from.resume()
  }

  /** `from` closed: close `to` once the messages still in hooks have gone. */
  end (code: number, reason: Buffer): void {
    const close = (): void => closeSocket(this.to, forwardCode(code), forwardCode(code) === code ? reason : '')
    if (this.tail === undefined) close()
    else void this.tail.then(close)
  }
}

class Tunnel {
  readonly context: WebSocketContext<any>
  private pinger: NodeJS.Timeout | undefined
  private idle: NodeJS.Timeout | undefined
  private expiry: NodeJS.Timeout | undefined

  readonly settings: ResolvedWebSocket

  constructor (private readonly client: WebSocket, private readonly upstream: WebSocket, opts: TunnelOptions) {
    const settings = this.settings = opts.settings
    this.context = {
      ...opts.context,
      protocol: upstream.protocol,
      close: (code = 1000, reason = '') => {
        if (Buffer.byteLength(reason) > MAX_REASON_BYTES) throw new RangeError(`A close reason may hold at most ${MAX_REASON_BYTES} bytes`)
        this.closeBoth(forwardCode(code), reason)
      }
    }
    const up = new Relay(this, client, upstream, settings.onClientMessage)
    const down = new Relay(this, upstream, client, settings.onUpstreamMessage)
    // ws closes a socket after an error by itself; the close is what gets relayed.
    let clientFault: number | undefined
    let upstreamFault: number | undefined
    client.on('error', (err: Error) => { clientFault = protocolErrorCode(err) })
    upstream.on('error', (err: Error) => {
      upstreamFault = protocolErrorCode(err)
      this.context.log.info({ err: { type: err.name, message: err.message } }, 'websocket upstream error')
    })
    client.on('close', (code: number, reason: Buffer) => {
      opts.observe?.closed(code)
      this.stop()
      up.end(code === 1006 ? clientFault ?? code : code, reason)
    })
    upstream.on('close', (code: number, reason: Buffer) => {
      this.stop()
      down.end(code === 1006 ? upstreamFault ?? code : code, reason)
    })

    if (settings.pingInterval > 0) this.keepAlive(up, down)
    if (settings.idleTimeout > 0) {
      this.idle = setTimeout(() => this.closeBoth(1001, 'Idle timeout'), settings.idleTimeout).unref()
    }
    if (opts.expiresAt !== undefined) this.expireAt(opts.expiresAt, opts.tokenValid)

    if (upstream.readyState !== WebSocket.OPEN) {
      // The upstream went away between its handshake and the caller's.
      this.closeBoth(1011, '')
      return
    }
    upstream.resume()
  }

  activity (): void {
    this.idle?.refresh()
  }

  fail (err: unknown): void {
    this.context.log.error({ err }, 'websocket message hook failed')
    this.closeBoth(1011, '')
  }

  closeBoth (code: number, reason: string): void {
    this.stop()
    closeSocket(this.client, code, reason)
    closeSocket(this.upstream, code, reason)
  }

  private stop (): void {
    clearInterval(this.pinger)
    clearTimeout(this.idle)
    clearTimeout(this.expiry)
    this.idle = undefined
  }

  private keepAlive (up: Relay, down: Relay): void {
    let clientAlive = true
    let upstreamAlive = true
    this.client.on('pong', () => { clientAlive = true })
    this.upstream.on('pong', () => { upstreamAlive = true })
    // A side we stopped reading cannot show us its pong: it is not counted as dead.
    this.pinger = setInterval(() => {
      if (!clientAlive && !up.paused) return this.client.terminate()
      if (!upstreamAlive && !down.paused) return this.upstream.terminate()
      clientAlive = false
      upstreamAlive = false
      this.client.ping()
      this.upstream.ping()
    }, this.settings.pingInterval).unref()
  }

  private expireAt (at: number, tokenValid: () => boolean): void {
    const check = (): void => {
      const now = Date.now()
      if (now < at) return this.scheduleExpiry(check, at - now)
      if (tokenValid()) return this.scheduleExpiry(check, EXPIRY_RECHECK_MS)
      this.closeBoth(1008, 'Token expired')
    }
    this.scheduleExpiry(check, at - Date.now())
  }

  private scheduleExpiry (fn: () => void, ms: number): void {
    this.expiry = setTimeout(fn, Math.min(Math.max(ms, 0), MAX_TIMER_MS)).unref()
  }
}

/**
 * Relays messages between the caller and the upstream until either closes:
 * text stays text, binary stays binary, the close code and reason are passed
 * on, a slow reader pauses the other side, and keep-alive, idle timeout and
 * token expiry close both sides.
 */
export function tunnel (client: WebSocket, upstream: WebSocket, opts: TunnelOptions): void {
  new Tunnel(client, upstream, opts) // eslint-disable-line no-new
}
