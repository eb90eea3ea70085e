// memori from node-postgres (pg): the same steps as ../psycopg_app.py. Numbers go as untyped
// parameters (PostgreSQL reads 0.9 as double precision); jsonb as JSON text with a ::jsonb cast.
//
//   node app.js /var/run/memori 5499 app my_app
const { Client } = require('pg');
const assert = require('assert');

const QUESTION = 'How should SQL be written for this user?';

async function main([host, port, database, user]) {
  const client = new Client({ host, port: Number(port), database, user });
  await client.connect();
  let id, hits, context, others;
  try {
    await client.query('BEGIN');
    await client.query("SELECT set_config('memori.user_id', $1, true)", ['customer-node']);
    ({ rows: [{ id }] } = await client.query(
      "SELECT memori_store($1, 'rule', importance => $2, metadata => $3::jsonb) AS id",
      ['User prefers JOINs over subqueries', 0.9, JSON.stringify({ source: 'node-postgres' })]));
    ({ rows: hits } = await client.query('SELECT content, similarity FROM memori_search($1, k => 3)', [QUESTION]));
    ({ rows: [{ memori_context: context }] } = await client.query('SELECT memori_context($1)', [QUESTION]));
    await client.query('COMMIT');
    await client.query('BEGIN');
    await client.query("SELECT set_config('memori.user_id', $1, true)", ['someone-else']);
    ({ rows: [{ count: others }] } = await client.query('SELECT count(*)::int AS count FROM memori_search($1)', [QUESTION]));
    await client.query('COMMIT');
  } finally {
    await client.end();
  }
  assert.strictEqual(hits[0].content, 'User prefers JOINs over subqueries');
  assert.ok(context.includes('JOINs over subqueries'));
  assert.strictEqual(others, 0, 'another end user sees nothing of this one');
  console.log(`ok node-postgres: stored ${id}, found '${hits[0].content}' at ${hits[0].similarity.toFixed(2)}, context of ${context.length} characters`);
}

main(process.argv.slice(2)).catch((e) => { console.error(e); process.exit(1); });
