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
  /**
   * What the message hooks see. Only kept when the target has a hook: the
   * Fastify request it holds would otherwise outlive the handshake for nothing.
   */
  readonly context: Omit<WebSocketContext<any>, 'protocol' | 'close'>
  /** The caller's token, checked again once `expiresAt` passed; `undefined` for public targets. */
  readonly token: string | undefined
  /** When the caller's token must be checked again (ms since epoch); `undefined` for public targets. */
  readonly expiresAt: number | undefined
  /** True while `token` is still accepted (clock tolerance); one function for all tunnels of a route. */
  readonly tokenValid: (token: string) => boolean
  /** Metrics and access log, when on: told once the tunnel is over. */
  readonly observe?: { closed: (code: number) => void } | undefined
}

/*
 * A gateway holds thousands of idle tunnels: each socket's listeners are the
 * shared functions below, which find their direction through this key, and
 * the keep-alive pings come from one timer per interval, not one per tunnel.
 */
const kRelay = Symbol('gatehouse.relay')
type Side = WebSocket & { [kRelay]: Relay }

function relayOf (socket: WebSocket): Relay {
  return (socket as Side)[kRelay]
}

function relayMessage (this: WebSocket, raw: RawData, binary: boolean): void {
  relayOf(this).onMessage(raw, binary)
}

function relayError (this: WebSocket, err: Error): void {
  relayOf(this).onError(err)
}

function relayClose (this: WebSocket, code: number, reason: Buffer): void {
  relayOf(this).onClose(code, reason)
}

function relayPong (this: WebSocket): void {
  relayOf(this).alive = true
}

/** One direction: messages from `from` go to `to`, through the hook. */
class Relay {
  paused = false
  /** `from` answered the last ping (or none was sent yet). */
  alive = true
  /** The close code a protocol error of `from` stands for; ws reports such a close as 1006. */
  private fault: number | undefined
  private pending = 0
  private tail: Promise<void> | undefined

  constructor (
    private readonly tunnel: Tunnel,
    private readonly from: WebSocket,
    private readonly to: WebSocket,
    private readonly hook: WebSocketMessageHook<any> | undefined,
    private readonly isClient: boolean
  ) {
    ;(from as Side)[kRelay] = this
    from.on('message', relayMessage)
    // ws closes a socket after an error by itself; the close is what gets relayed.
    from.on('error', relayError)
    from.on('close', relayClose)
  }

  onMessage (raw: RawData, binary: boolean): void {
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
      result = this.hook(message, this.tunnel.context as WebSocketContext<any>)
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

  onError (err: Error): void {
    this.fault = protocolErrorCode(err)
    // Protocol errors (bad frame, payload too large): ws closes the socket
    // with the right code by itself, and the close is what gets relayed.
    const detail = { err: { type: err.name, message: err.message } }
    this.tunnel.log.info(detail, this.isClient ? 'websocket connection error' : 'websocket upstream error')
  }

  onClose (code: number, reason: Buffer): void {
    if (this.isClient) this.tunnel.observe?.closed(code)
    this.tunnel.stop()
    this.end(code === 1006 ? this.fault ?? code : code, reason)
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

  /** One keep-alive round: false when `from` missed the last ping and was dropped. */
  ping (): boolean {
    // A side we stopped reading cannot show us its pong: it is not counted as dead.
    if (!this.alive && !this.paused) {
      this.from.terminate()
      return false
    }
    return true
  }

  sendPing (): void {
    this.alive = false
    this.from.ping()
  }

  /** `from` closed: close `to` once the messages still in hooks have gone. */
  end (code: number, reason: Buffer): void {
    const close = (): void => closeSocket(this.to, forwardCode(code), forwardCode(code) === code ? reason : '')
    if (this.tail === undefined) close()
    else void this.tail.then(close)
  }
}

// A tick every 25 ms pings a slot: 1,200 slots of a 30 s interval, each of
// about 4 tunnels out of 5,000, so a message never waits behind more than a
// few pings.
const TICK_MS = 25
const MAX_SLOTS = 4096

/**
 * The tunnels that share one ping interval. Its timer ticks `slots.length`
 * times an interval (every 25 ms, or once for an interval under 50 ms)
 * and pings one slot a tick; tunnels join the slots in
 * turn, so each is pinged once an interval and the pings of thousands of
 * tunnels (opened in one burst, say) are spread over the interval, as
 * per-tunnel timers would spread them, instead of arriving all at once.
 */
class KeepAlive {
  readonly slots: Array<Set<Tunnel>>
  readonly timer: NodeJS.Timeout
  /** The slot the next joining tunnel takes. */
  next = 0
  /** The slot the next tick pings. */
  turn = 0
  size = 0

  constructor (interval: number) {
    const count = Math.max(1, Math.min(MAX_SLOTS, Math.floor(interval / TICK_MS)))
    this.slots = Array.from({ length: count }, () => new Set<Tunnel>())
    this.timer = setInterval(pingTurn, interval / count, this).unref()
  }
}

const keepAlives = new Map<number, KeepAlive>()
// Tunnels pinged in one turn of the event loop: thousands of pings written
// at once would hold up every message behind them.
const PING_SLICE = 256

function pingSlice (tunnels: Tunnel[], from: number): void {
  const end = Math.min(from + PING_SLICE, tunnels.length)
  for (let i = from; i < end; i++) (tunnels[i] as Tunnel).pingRound()
  if (end < tunnels.length) setImmediate(pingSlice, tunnels, end)
}

function pingTurn (group: KeepAlive): void {
  const slot = group.slots[group.turn] as Set<Tunnel>
  group.turn = (group.turn + 1) % group.slots.length
  if (slot.size > 0) pingSlice([...slot], 0)
}

/** Adds a tunnel to its interval's keep-alive; returns the slot it joined. */
function joinKeepAlive (tunnel: Tunnel, interval: number): Set<Tunnel> {
  let group = keepAlives.get(interval)
  if (group === undefined) {
    group = new KeepAlive(interval)
    keepAlives.set(interval, group)
  }
  const slot = group.slots[group.next] as Set<Tunnel>
  group.next = (group.next + 1) % group.slots.length
  slot.add(tunnel)
  group.size++
  return slot
}

function leaveKeepAlive (tunnel: Tunnel, slot: Set<Tunnel>, interval: number): void {
  const group = keepAlives.get(interval)
  if (group === undefined || !slot.delete(tunnel) || --group.size > 0) return
  clearInterval(group.timer)
  keepAlives.delete(interval)
}

function idleOut (tunnel: Tunnel): void {
  tunnel.closeBoth(1001, 'Idle timeout')
}

function checkExpiry (tunnel: Tunnel): void {
  tunnel.checkExpiry()
}

class Tunnel {
  readonly settings: ResolvedWebSocket
  readonly log: WebSocketContext<any>['log']
  /** Built only when the target has a message hook (the only reader). */
  readonly context: WebSocketContext<any> | undefined
  readonly observe: TunnelOptions['observe']
  private readonly up: Relay
  private readonly down: Relay
  private readonly token: string | undefined
  private readonly expiresAt: number | undefined
  private readonly tokenValid: TunnelOptions['tokenValid']
  private idle: NodeJS.Timeout | undefined
  private expiry: NodeJS.Timeout | undefined
  // The keep-alive slot this tunnel is pinged from, while it is kept alive.
  private keepAlive: Set<Tunnel> | undefined

  constructor (private readonly client: WebSocket, private readonly upstream: WebSocket, opts: TunnelOptions) {
    const settings = this.settings = opts.settings
    this.log = opts.context.log
    this.observe = opts.observe
    this.token = opts.token
    this.expiresAt = opts.expiresAt
    this.tokenValid = opts.tokenValid
    this.context = settings.onClientMessage === undefined && settings.onUpstreamMessage === undefined
      ? undefined
      : {
          ...opts.context,
          protocol: upstream.protocol,
          close: (code = 1000, reason = '') => {
            if (Buffer.byteLength(reason) > MAX_REASON_BYTES) throw new RangeError(`A close reason may hold at most ${MAX_REASON_BYTES} bytes`)
            this.closeBoth(forwardCode(code), reason)
          }
        }
    this.up = new Relay(this, client, upstream, settings.onClientMessage, true)
    this.down = new Relay(this, upstream, client, settings.onUpstreamMessage, false)

    if (settings.pingInterval > 0) {
      client.on('pong', relayPong)
      upstream.on('pong', relayPong)
      this.keepAlive = joinKeepAlive(this, settings.pingInterval)
    }
    if (settings.idleTimeout > 0) this.idle = setTimeout(idleOut, settings.idleTimeout, this).unref()
    if (this.expiresAt !== undefined) this.scheduleExpiry(this.expiresAt - Date.now())

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
    this.log.error({ err }, 'websocket message hook failed')
    this.closeBoth(1011, '')
  }

  closeBoth (code: number, reason: string): void {
    this.stop()
    closeSocket(this.client, code, reason)
    closeSocket(this.upstream, code, reason)
  }

  stop (): void {
    if (this.keepAlive !== undefined) {
      leaveKeepAlive(this, this.keepAlive, this.settings.pingInterval)
      this.keepAlive = undefined
    }
    clearTimeout(this.idle)
    clearTimeout(this.expiry)
    this.idle = undefined
  }

  /** The shared keep-alive timer's turn for this tunnel: drop a side that missed a ping, ping both. */
  pingRound (): void {
    // Closed since this round started.
    if (this.keepAlive === undefined) return
    if (!this.up.ping() || !this.down.ping()) return
    this.up.sendPing()
    this.down.sendPing()
  }

  checkExpiry (): void {
    const at = this.expiresAt as number
    const now = Date.now()
    if (now < at) return this.scheduleExpiry(at - now)
    if (this.tokenValid(this.token as string)) return this.scheduleExpiry(EXPIRY_RECHECK_MS)
    this.closeBoth(1008, 'Token expired')
  }

  private scheduleExpiry (ms: number): void {
    this.expiry = setTimeout(checkExpiry, Math.min(Math.max(ms, 0), MAX_TIMER_MS), this).unref()
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
