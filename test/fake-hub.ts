/**
 * A fake Hugging Face Hub on 127.0.0.1 (node:http) for the Hub download tests: the real Hub is
 * unreachable here. It implements exactly the endpoints @huggingface/hub 2.17 calls:
 *
 *   GET /api/models/:org/:name/revision/:rev?expand=…   model info with `sha` (the commit)
 *   GET /api/models/:org/:name/tree/:rev[/path]?recursive=…&expand=…&cursor=…
 *                                                       the file listing (type, oid, size, path,
 *                                                       lfs {oid, size, pointerSize}), paginated
 *                                                       with a `Link: <…>; rel="next"` header
 *   GET|HEAD /:org/:name/resolve/:rev/:path             the bytes, with Range / 206 /
 *                                                       Content-Range, ETag, X-Linked-ETag,
 *                                                       X-Linked-Size, X-Repo-Commit; 404 with
 *                                                       X-Error-Code: EntryNotFound / RepoNotFound /
 *                                                       RevisionNotFound
 *
 * Faults for tests: cut the connection after N bytes of a file, serve a corrupted body, and a
 * request log to assert on.
 */
import { createHash } from 'node:crypto';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeFile {
  path: string;
  bytes: Uint8Array;
  /** Stored with Git LFS (etag and oid: sha256), else a plain git file (oid: git blob sha1). */
  lfs?: boolean;
}

export interface LoggedRequest {
  method: string;
  /** Path without the query. */
  path: string;
  query: string;
  range: string | undefined;
  authorization: string | undefined;
  status: number;
  /** Body bytes sent. */
  sent: number;
}

interface Repo {
  commits: Map<string, FakeFile[]>;
  refs: Map<string, string>;
}

export function gitBlobSha1(bytes: Uint8Array): string {
  return createHash('sha1').update(`blob ${bytes.byteLength}\0`).update(bytes).digest('hex');
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** A deterministic 40-hex commit id. */
export function commitId(label: string): string {
  return createHash('sha1').update(`commit ${label}`).digest('hex');
}

export class FakeHub {
  readonly log: LoggedRequest[] = [];
  /** Entries per page of the tree listing (small, so pagination is exercised). */
  pageSize = 3;
  /** file path → bytes after which the next full GET of it is cut (once per entry; `times` counts down). */
  readonly cuts = new Map<string, { after: number; times: number }>();
  /** Answer Range requests with the whole file (200), as some proxies do. */
  ignoreRange = false;
  /** Paths whose body is served with one byte flipped. */
  readonly corrupt = new Set<string>();
  private readonly repos = new Map<string, Repo>();
  private server!: Server;
  url = '';

  static async start(): Promise<FakeHub> {
    const hub = new FakeHub();
    hub.server = createServer((req, res) => {
      hub.handle(req, res).catch((e: unknown) => {
        res.statusCode = 500;
        res.end(String(e));
      });
    });
    await new Promise<void>((resolve) => hub.server.listen(0, '127.0.0.1', resolve));
    hub.url = `http://127.0.0.1:${(hub.server.address() as AddressInfo).port}`;
    return hub;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Adds a commit to `repo` and points `refs` (e.g. main, a tag) at it. */
  addCommit(repo: string, commit: string, files: FakeFile[], refs: string[] = ['main']): void {
    const r = this.repos.get(repo) ?? { commits: new Map(), refs: new Map() };
    this.repos.set(repo, r);
    r.commits.set(commit, files);
    for (const ref of refs) r.refs.set(ref, commit);
  }

  /** Requests whose path contains `part`. */
  requests(part: string): LoggedRequest[] {
    return this.log.filter((r) => r.path.includes(part));
  }

  private resolveRev(repo: Repo, rev: string): string | undefined {
    if (repo.commits.has(rev)) return rev;
    return repo.refs.get(rev);
  }

  private static oid(f: FakeFile): string {
    return f.lfs ? sha256(f.bytes) : gitBlobSha1(f.bytes);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', this.url);
    const entry: LoggedRequest = {
      method: req.method ?? 'GET',
      path: decodeURIComponent(u.pathname),
      query: u.search,
      range: req.headers.range,
      authorization: req.headers.authorization,
      status: 0,
      sent: 0,
    };
    this.log.push(entry);
    const json = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      entry.status = status;
      const text = JSON.stringify(body);
      entry.sent = text.length;
      res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
      res.end(text);
    };
    const notFound = (code: string, message: string) => json(404, { error: message }, { 'X-Error-Code': code });

    const parts = u.pathname.split('/').slice(1).map(decodeURIComponent);
    // /api/models/:org/:name/(revision|tree)/:rev[/path…]
    if (parts[0] === 'api' && parts[1] === 'models') {
      const repoName = `${parts[2]}/${parts[3]}`;
      const repo = this.repos.get(repoName);
      if (!repo) return notFound('RepoNotFound', 'Repository not found');
      const rev = parts[5] ?? '';
      const commit = this.resolveRev(repo, rev);
      if (!commit) return notFound('RevisionNotFound', `Invalid rev id: ${rev}`);
      const files = repo.commits.get(commit)!;
      if (parts[4] === 'revision') {
        return json(200, {
          _id: createHash('md5').update(repoName).digest('hex').slice(0, 24),
          id: repoName,
          sha: commit,
          private: false,
          gated: false,
          downloads: 0,
          likes: 0,
          lastModified: '2025-01-01T00:00:00.000Z',
          pipeline_tag: 'text-generation',
          siblings: files.map((f) => ({ rfilename: f.path })),
        });
      }
      if (parts[4] === 'tree') {
        const prefix = parts.slice(6).join('/');
        const recursive = u.searchParams.get('recursive') === 'true';
        const entries: unknown[] = [];
        const dirs = new Set<string>();
        for (const f of files) {
          if (prefix && !f.path.startsWith(`${prefix}/`)) continue;
          const rel = prefix ? f.path.slice(prefix.length + 1) : f.path;
          const segs = rel.split('/');
          for (let i = 1; i < segs.length; i++) {
            const d = [prefix, ...segs.slice(0, i)].filter(Boolean).join('/');
            if (!dirs.has(d) && (recursive || i === 1)) {
              dirs.add(d);
              entries.push({ type: 'directory', oid: commitId(d), size: 0, path: d });
            }
          }
          if (segs.length > 1 && !recursive) continue;
          entries.push({
            type: 'file',
            oid: gitBlobSha1(f.bytes),
            size: f.bytes.byteLength,
            path: f.path,
            ...(f.lfs ? { lfs: { oid: sha256(f.bytes), size: f.bytes.byteLength, pointerSize: 134 } } : {}),
          });
        }
        const cursor = Number(u.searchParams.get('cursor') ?? '0');
        const page = entries.slice(cursor, cursor + this.pageSize);
        const headers: Record<string, string> = {};
        if (cursor + this.pageSize < entries.length) {
          const next = new URL(u);
          next.searchParams.set('cursor', String(cursor + this.pageSize));
          headers.Link = `<${next.href}>; rel="next"`;
        }
        return json(200, page, headers);
      }
      return notFound('EntryNotFound', 'unknown API');
    }
    // /:org/:name/resolve/:rev/:path…
    if (parts[2] === 'resolve') {
      const repoName = `${parts[0]}/${parts[1]}`;
      const repo = this.repos.get(repoName);
      if (!repo) return notFound('RepoNotFound', 'Repository not found');
      const rev = parts[3] ?? '';
      const commit = this.resolveRev(repo, rev);
      if (!commit) return notFound('RevisionNotFound', `Invalid rev id: ${rev}`);
      const filePath = parts.slice(4).join('/');
      const file = repo.commits.get(commit)!.find((f) => f.path === filePath);
      if (!file) return notFound('EntryNotFound', `${filePath} does not exist on "${rev}"`);
      let body = file.bytes;
      if (this.corrupt.has(filePath)) {
        body = body.slice();
        body[Math.floor(body.length / 2)]! ^= 0xff;
      }
      const total = body.byteLength;
      const oid = FakeHub.oid(file);
      const headers: Record<string, string | number> = {
        'Accept-Ranges': 'bytes',
        'Content-Type': 'application/octet-stream',
        ETag: `"${oid}"`,
        'X-Repo-Commit': commit,
        ...(file.lfs ? { 'X-Linked-ETag': `"${oid}"`, 'X-Linked-Size': total } : {}),
      };
      let start = 0;
      let end = total - 1;
      let status = 200;
      const range = req.headers.range;
      if (range && !this.ignoreRange) {
        const m = /^bytes=(\d+)-(\d*)$/.exec(range);
        if (!m || Number(m[1]) >= total) {
          entry.status = 416;
          res.writeHead(416, { 'Content-Range': `bytes */${total}` });
          res.end();
          return;
        }
        start = Number(m[1]);
        end = m[2] ? Math.min(Number(m[2]), total - 1) : total - 1;
        status = 206;
        headers['Content-Range'] = `bytes ${start}-${end}/${total}`;
      }
      const slice = body.subarray(start, end + 1);
      headers['Content-Length'] = slice.byteLength;
      entry.status = status;
      res.writeHead(status, headers);
      if (req.method === 'HEAD') {
        res.end();
        return;
      }
      const cut = this.cuts.get(filePath);
      if (cut && cut.times > 0 && slice.byteLength > cut.after) {
        cut.times--;
        entry.sent = cut.after;
        res.write(slice.subarray(0, cut.after), () => {
          setTimeout(() => res.socket?.destroy(), 20);
        });
        return;
      }
      entry.sent = slice.byteLength;
      res.end(slice);
      return;
    }
    notFound('EntryNotFound', 'not found');
  }
}
