// piscina's task for node:piscina: count one chunk on a pool thread.

'use strict';

const { count } = require('./count');

module.exports = ({ len }) => {
  const started = performance.timeOrigin + performance.now();
  const result = count(len);
  return { result, started, ended: performance.timeOrigin + performance.now() };
};
