/** Progress bars on stderr (cli-progress), quiet when stderr is not a terminal unless forced. */
import cliProgress from 'cli-progress';

export interface Bar {
  /** Sets the fraction done (0…1) and an optional label. */
  update(fraction: number, label?: string): void;
  stop(): void;
}

export function progressBar(title: string, enabled = process.stderr.isTTY === true): Bar {
  if (!enabled) {
    return { update() {}, stop() {} };
  }
  const bar = new cliProgress.SingleBar(
    {
      format: `${title.padEnd(22)} {bar} {percentage}% | {label} | {duration_formatted}`,
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: true,
      barsize: 30,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(1000, 0, { label: '' });
  return {
    update(fraction, label = '') {
      bar.update(Math.round(Math.min(1, Math.max(0, fraction)) * 1000), { label });
    },
    stop() {
      bar.stop();
    },
  };
}
