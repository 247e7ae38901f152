// One Redis subscriber connection per API process, fanning job events out to the live streams open on it.
// A thousand streams cost a thousand map entries here, not a thousand Redis connections.
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { JobEvent } from '../events.js';
import { Gauge } from 'prom-client';
import { registry } from '../metrics.js';
import { keys } from '../queues/keys.js';
import { createRedis, type RedisClient } from '../queues/redis.js';

const hubs = new Set<EventHub>();
const JOB_ID_MARK = '"job":{"id":"';
new Gauge({
  name: 'sse_streams_open',
  help: 'Live job-event (SSE) streams open on this process',
  registers: [registry],
  collect() {
    let n = 0;
    for (const h of hubs) n += h.size;
    this.set(n);
  },
});

export interface JobEventListener {
  /** A change of the job, in publish order. */
  event(event: JobEvent): void;
  /** The subscriber reconnected: events may have been missed, read them from the job's stream. */
  resync(): void;
  /** The hub is closing (process shutdown): end the stream so the client reconnects elsewhere. */
  close(): void;
}

/** Told of every job event this process receives (by job id, without parsing the event), and of every gap in them. */
export interface JobChangeWatcher {
  change(jobId: string): void;
  /** Events may be missed from now on, until `receiving` is true again (the subscriber lost its connection). */
  gap(): void;
}

export class EventHub {
  private readonly listeners = new Map<string, Set<JobEventListener>>();
  private readonly watchers = new Set<JobChangeWatcher>();
  private live = false;
  private readonly subscribed: Promise<unknown>;
  private connectedOnce = false;
  private gapped = false;
  private closed = false;

  constructor(
    private readonly subscriber: RedisClient,
    private readonly channel: string,
    private readonly log?: Logger,
  ) {
    subscriber.on('error', () => {});
    subscriber.on('message', (ch: string, message: string) => this.dispatch(ch, message));
    // After a reconnect, live messages are held back until the subscription is confirmed live again; then every
    // stream reads what it missed from its job's Redis stream, and live delivery resumes after that read.
    subscriber.on('close', () => {
      if (this.connectedOnce) this.gapped = true;
      this.live = false;
      for (const w of this.watchers) w.gap();
    });
    subscriber.on('ready', () => {
      if (!this.connectedOnce) {
        this.connectedOnce = true;
        return;
      }
      // ioredis resubscribes by itself; the reply to this one (a no-op repeat) says the subscription is live.
      subscriber
        .subscribe(channel)
        .then(() => {
          this.gapped = false;
          this.live = !this.closed;
          this.forEach((l) => l.resync());
        })
        .catch(() => {});
    });
    this.subscribed = subscriber.subscribe(channel);
    this.subscribed.then(() => (this.live = !this.closed && !this.gapped)).catch(() => {});
    hubs.add(this);
    this.subscribed.catch((err) => log?.warn({ err: String(err) }, 'event hub: subscribe failed'));
  }

  static create(config: Config, log?: Logger): EventHub {
    return new EventHub(createRedis(config, 'subscriber'), keys(config).events, log);
  }

  /** True while every job event published reaches this process. */
  get receiving(): boolean {
    return this.live;
  }

  /** Adds a watcher of every job change (the status cache) for the hub's lifetime. */
  watch(watcher: JobChangeWatcher): void {
    this.watchers.add(watcher);
  }

  /** Open streams (listeners) on this process. */
  get size(): number {
    let n = 0;
    for (const set of this.listeners.values()) n += set.size;
    return n;
  }

  /**
   * Registers a listener for one job; resolves once the Redis subscription is live, so every event published
   * after this returns reaches the listener. Rejects after `timeoutMs` while Redis is unreachable.
   */
  async subscribe(jobId: string, listener: JobEventListener, timeoutMs = 3_000): Promise<() => void> {
    if (this.closed) throw new Error('event hub closed');
    let set = this.listeners.get(jobId);
    if (!set) this.listeners.set(jobId, (set = new Set()));
    set.add(listener);
    const unsubscribe = () => {
      const s = this.listeners.get(jobId);
      if (!s) return;
      s.delete(listener);
      if (s.size === 0) this.listeners.delete(jobId);
    };
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.subscribed,
        new Promise(
          (_, reject) =>
            (timer = setTimeout(() => reject(new Error('Redis unreachable: Connection is closed')), timeoutMs)),
        ),
      ]);
    } catch (err) {
      unsubscribe();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    return unsubscribe;
  }

  /** Ends every stream and drops the connection. */
  async close(): Promise<void> {
    this.closed = true;
    this.live = false;
    for (const w of this.watchers) w.gap();
    hubs.delete(this);
    this.forEach((l) => l.close());
    this.listeners.clear();
    this.subscriber.disconnect();
  }

  private forEach(fn: (l: JobEventListener) => void) {
    for (const set of [...this.listeners.values()]) for (const l of [...set]) fn(l);
  }

  private dispatch(channel: string, message: string) {
    if (channel !== this.channel) return;
    if (this.watchers.size) {
      // `{"id":"<stream id>","event":"…","job":{"id":"<uuid>",…`: the job's id without parsing the whole event.
      const at = message.indexOf(JOB_ID_MARK);
      if (at >= 0) {
        const jobId = message.slice(at + JOB_ID_MARK.length, at + JOB_ID_MARK.length + 36);
        for (const w of this.watchers) w.change(jobId);
      }
    }
    if (this.listeners.size === 0 || this.gapped) return;
    let event: JobEvent;
    try {
      event = JSON.parse(message) as JobEvent;
    } catch {
      this.log?.warn('event hub: unparseable message');
      return;
    }
    const set = this.listeners.get(event.job?.id);
    if (set) for (const l of [...set]) l.event(event);
  }
}
