// `count`: the seed's loop, n increments of a counter, in JavaScript as the article wrote it.
// The counter lives in a variable the loop reads and writes each time, and the result is
// used by the caller, so the JIT keeps every iteration: time scales with n, as offload's
// black-boxed Rust loop does, and the result is n, as offload's is.

'use strict';

function count(n) {
  let counter = 0;
  for (let i = 0; i < n; i++) counter++;
  return counter;
}

module.exports = { count };
