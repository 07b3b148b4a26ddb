// Links in chat text: the text split into plain parts and http(s) links, for the view to build as
// text nodes and <a> elements (never as HTML). Pure, unit-tested in node.

const URL_LIKE = /\bhttps?:\/\/[^\s<>"']+/gi;
/** Punctuation that ends a sentence rather than a link ("see https://x.org/a."). */
const TRAILING = /[.,;:!?)\]}'"]+$/;

/** text -> [{text}] and [{text, href}] in order; only http: and https: URLs become links. */
export function linkParts(text) {
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(URL_LIKE)) {
    let candidate = match[0];
    const tail = candidate.match(TRAILING);
    // A closing parenthesis belongs to the link when the link opened one (Wikipedia's "(disambiguation)").
    if (tail && !(tail[0] === ')' && candidate.includes('('))) candidate = candidate.slice(0, -tail[0].length);
    let href = null;
    try {
      const url = new URL(candidate);
      if (url.protocol === 'http:' || url.protocol === 'https:') href = url.href;
    } catch {
      href = null;
    }
    if (!href) continue;
    if (match.index > last) parts.push({ text: text.slice(last, match.index) });
    parts.push({ text: candidate, href });
    last = match.index + candidate.length;
  }
  if (last < text.length) parts.push({ text: text.slice(last) });
  return parts;
}
