import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { defineService } from '../../shared/define-service.js'
import { sendJson, sendProblem } from '../../shared/http/problem.js'
import { type Authority, loadOrCreateAuthority } from '../../shared/identity/local-authority.js'
import { issueAccessToken, issueRoleToken } from '../../shared/identity/local-tokens.js'
import { timerTask } from '../../shared/timer-task.js'

const MAX_BODY_BYTES = 64 * 1024
const DEFAULT_TTL_SEC = 3600

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  let size = 0
  const chunks: Buffer[] = []
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > MAX_BODY_BYTES) throw Object.assign(new Error('request body too large'), { status: 413 })
    chunks.push(chunk)
  }
  try {
    const v: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}')
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('expected a JSON object')
    return v as Record<string, unknown>
  } catch (err) {
    throw Object.assign(new Error(`invalid JSON body: ${(err as Error).message}`), { status: 400 })
  }
}

/** The SIA token server API on TOKEN_SERVER_ADDR, backed by the local authority. */
defineService({
  async start({ config, log, serve, go }) {
    let ca: Authority = await loadOrCreateAuthority(config.dataDir)
    const principal = `${config.athenzDomain}.${config.serviceAccount}`

    const handle = async (req: IncomingMessage, res: ServerResponse) => {
      const path = (req.url ?? '/').split('?')[0]
      if (req.method === 'POST' && (path === '/roletoken' || path === '/accesstoken')) {
        const body = await readJson(req)
        if (typeof body.domain !== 'string' || body.domain === '') {
          return sendProblem(res, { status: 400, title: 'Bad Request', detail: 'domain is required' })
        }
        const roles = typeof body.role === 'string' && body.role ? body.role.split(',') : []
        if (path === '/roletoken')
          return sendJson(res, 200, issueRoleToken(ca, principal, body.domain, roles, DEFAULT_TTL_SEC))
        const ttl = typeof body.expiry === 'number' && body.expiry > 0 ? body.expiry : DEFAULT_TTL_SEC
        return sendJson(res, 200, issueAccessToken(ca, principal, body.domain, roles, ttl))
      }
      if (req.method === 'GET' && path === '/') {
        const domain = req.headers['x-athenz-domain']
        const role = req.headers['x-athenz-role']
        if (typeof domain !== 'string' || typeof role !== 'string' || !domain || !role) {
          return sendProblem(res, {
            status: 400,
            title: 'Bad Request',
            detail: 'headers X-Athenz-Domain and X-Athenz-Role are required',
          })
        }
        const at = issueAccessToken(ca, principal, domain, role.split(','), DEFAULT_TTL_SEC)
        const rt = issueRoleToken(ca, principal, domain, role.split(','), DEFAULT_TTL_SEC)
        return sendJson(
          res,
          200,
          { ...at, role_token: rt.token },
          {
            authorization: `bearer ${at.access_token}`,
            'athenz-role-auth': rt.token,
          },
        )
      }
      sendProblem(res, { status: 404, title: 'Not Found' })
    }

    const server = createServer((req, res) => {
      handle(req, res).catch((err: { status?: number; message: string }) => {
        if (res.headersSent) return void res.destroy()
        sendProblem(res, {
          status: err.status ?? 500,
          title: err.status ? 'Bad Request' : 'Internal Error',
          detail: err.message,
        })
      })
    })
    server.requestTimeout = config.tokenServerTimeout
    await serve('server', server, config.tokenServerAddr)
    await go(
      'refresh-timer',
      timerTask(
        () => config.tokenRefreshInterval,
        async () => {
          ca = await loadOrCreateAuthority(config.dataDir)
          log.debug({ event: 'token.refreshed' }, 'token signer refreshed')
        },
      ),
    )
  },
})
