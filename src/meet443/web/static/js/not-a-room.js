// The page for an address that is no meeting name: start a new meeting, or go to the name the
// address most likely meant (/Café-Talk → /cafe-talk).

import { randomRoomName, roomFromInput } from './params.js';

const create = document.getElementById('create');
create.href = `/${randomRoomName()}`;

let path = window.location.pathname.slice(1);
try {
  path = decodeURIComponent(path);
} catch {
  // a malformed escape (%E0): suggest from the raw text
}
const meant = roomFromInput(path);
if (meant) {
  const suggestion = document.getElementById('suggestion');
  suggestion.href = `/${meant}`;
  suggestion.textContent = `Go to /${meant}`;
  suggestion.hidden = false;
}
