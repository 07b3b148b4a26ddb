// The landing page: start a meeting under a random name, or join one by name or link.

import { randomRoomName, roomFromInput } from './params.js';

function go(room) {
  window.location.assign(`/${encodeURIComponent(room)}`);
}

const input = document.getElementById('room-input');
const joinButton = document.getElementById('join-button');
const hint = document.getElementById('room-hint');

document.getElementById('create').addEventListener('click', () => go(randomRoomName()));
input.addEventListener('input', () => {
  const room = roomFromInput(input.value);
  joinButton.disabled = !room;
  hint.textContent = input.value.trim() && room ? `You will join “${room}”.` : '';
});
document.getElementById('join').addEventListener('submit', (e) => {
  e.preventDefault();
  const room = roomFromInput(input.value);
  if (room) go(room);
});
