/**
 * A request's target as origin-form (`/path?query`). A server must accept the absolute form too
 * (RFC 9112 §3.2.2: `POST http://host/path`), which proxies send; anything else that is no
 * path here (`*`, an authority) becomes one that matches no route. Origin-form, what every client
 * of the hot paths sends, is returned as it is, without parsing.
 */
export function originForm(target: string | undefined): string {
  if (target === undefined || target === '') return '/'
  if (target.charCodeAt(0) === 0x2f /* / */) return target
  const url = URL.parse(target)
  return url && /^https?:$/.test(url.protocol) ? `${url.pathname}${url.search}` : `/${target}`
}

/** The path of a request target, without its query. */
export function targetPath(target: string | undefined): string {
  const t = originForm(target)
  const q = t.indexOf('?')
  return q < 0 ? t : t.slice(0, q)
}
