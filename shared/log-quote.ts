/** The most of a client's text a log record quotes. */
export const QUOTE_MAX = 1024

/**
 * Text a client chose (a request's URL, a header's value, a field's name in its body), as a log
 * record may quote it: its first QUOTE_MAX characters, then how long it was, if longer. A hostile
 * client otherwise chose the size of the record too: a 12 000-character URL made a 24 KB line,
 * written as it came, while a collector read it.
 */
export function quoted(text: string): string {
  return text.length <= QUOTE_MAX ? text : `${text.slice(0, QUOTE_MAX)}…[${text.length} characters, cut]`
}
