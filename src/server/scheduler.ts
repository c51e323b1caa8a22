/**
 * A bounded first-come-first-served queue in front of a pool of model slots. A model holds one
 * KV cache, so one slot runs one generation at a time; requests beyond the free slots wait, up to
 * `maxQueue` of them, and the rest are refused at once (the server answers 429).
 */

/** Thrown by `acquire` when every slot is busy and the queue is full. */
export class QueueFullError extends Error {
  constructor(
    readonly active: number,
    readonly queued: number,
  ) {
    super(`the server is busy: ${active} request(s) running and ${queued} waiting, the most it queues`);
    this.name = 'QueueFullError';
  }
}

/** Thrown by `acquire` when the request was cancelled (its signal aborted) or the queue was closed while it waited. */
export class QueueCancelledError extends Error {
  constructor(
    readonly reason: 'aborted' | 'closed',
    message: string,
  ) {
    super(message);
    this.name = 'QueueCancelledError';
  }
}

/** A held slot; `release()` hands it to the next waiter (idempotent). */
export interface Lease<T> {
  readonly slot: T;
  release(): void;
}

interface Waiter<T> {
  resolve(lease: Lease<T>): void;
  reject(e: Error): void;
  cleanup(): void;
}

export class Scheduler<T> {
  private readonly free: T[];
  private readonly waiters: Waiter<T>[] = [];
  private running = 0;
  private closedWith: QueueCancelledError | undefined;
  private idleWaiters: (() => void)[] = [];

  constructor(
    slots: readonly T[],
    /** Requests that may wait for a slot (0: none wait; a request that finds every slot busy is refused). */
    readonly maxQueue: number,
  ) {
    if (slots.length === 0) throw new Error('Scheduler needs at least one slot');
    if (!Number.isSafeInteger(maxQueue) || maxQueue < 0) throw new Error(`maxQueue must be an integer ≥ 0, got ${maxQueue}`);
    this.free = [...slots];
    this.capacity = slots.length;
  }

  /** Number of slots (requests that can run at once). */
  readonly capacity: number;

  /** Requests holding a slot. */
  get active(): number {
    return this.running;
  }

  /** Requests waiting for a slot. */
  get queued(): number {
    return this.waiters.length;
  }

  /**
   * Waits for a free slot. Rejects at once with QueueFullError when the queue is full, with
   * QueueCancelledError('aborted') when `signal` aborts while waiting (the waiter leaves the
   * queue), and with QueueCancelledError('closed') once `close` was called.
   */
  acquire(signal?: AbortSignal): Promise<Lease<T>> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    if (signal?.aborted) return Promise.reject(new QueueCancelledError('aborted', 'the request was cancelled before it started'));
    const slot = this.free.pop();
    if (slot !== undefined) return Promise.resolve(this.lease(slot));
    if (this.waiters.length >= this.maxQueue) return Promise.reject(new QueueFullError(this.running, this.waiters.length));
    return new Promise<Lease<T>>((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new QueueCancelledError('aborted', 'the request was cancelled while it waited'));
        this.notifyIdle();
      };
      const waiter: Waiter<T> = {
        resolve,
        reject,
        cleanup: () => signal?.removeEventListener('abort', onAbort),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  private lease(slot: T): Lease<T> {
    this.running++;
    let released = false;
    return {
      slot,
      release: () => {
        if (released) return;
        released = true;
        this.running--;
        const next = this.waiters.shift();
        if (next) {
          next.cleanup();
          next.resolve(this.lease(slot));
        } else {
          this.free.push(slot);
          this.notifyIdle();
        }
      },
    };
  }

  /** Refuses new requests and rejects every waiting one with QueueCancelledError('closed', message). */
  close(message: string): void {
    if (this.closedWith) return;
    this.closedWith = new QueueCancelledError('closed', message);
    for (const w of this.waiters.splice(0)) {
      w.cleanup();
      w.reject(this.closedWith);
    }
    this.notifyIdle();
  }

  get closed(): boolean {
    return this.closedWith !== undefined;
  }

  /** Resolves when no request runs or waits. */
  idle(): Promise<void> {
    if (this.running === 0 && this.waiters.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private notifyIdle(): void {
    if (this.running !== 0 || this.waiters.length !== 0) return;
    for (const f of this.idleWaiters.splice(0)) f();
  }
}
