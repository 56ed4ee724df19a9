#!/usr/bin/env node
// Runs an Amazon States Language state machine in aws-local-stepfunctions
// (a third-party ASL interpreter, from npm) with EVERY Task state
// overridden by a local handler, so that tests can check the order of the
// task states, retries and failure paths without AWS.
//
//   node --require ./polyfill.cjs run.cjs --definition FILE.json [options]
//
// Options (STATE is a state name; each option may be repeated):
//   --input JSON               execution input (default {})
//   --input-file FILE          execution input, from a file
//   --fail-once STATE[=ERROR]  STATE's handler throws ERROR (default
//                              States.TaskFailed) on its first call only
//   --fail-always STATE[=ERROR]  ... on every call
//   --query-rows STATE=N       athena getQueryResults: N data rows after the
//                              header row (default 1)
//   --query-columns STATE=N    ... of N columns each (default 16)
//   --query-value STATE=V      ... every data cell's VarCharValue (default "0")
//   --running-polls STATE=N    glue getCrawler: State RUNNING on the first N
//                              calls, READY after (default 0)
//   --last-crawl STATE=STATUS  glue getCrawler: LastCrawl.Status once READY
//                              (default SUCCEEDED)
//   --respond STATE=JSON       STATE's handler returns exactly JSON
//   --execution-name NAME      the context object's $$.Execution.Name (default
//                              local-execution); $$.Execution.Id,
//                              $$.StateMachine.Id/Name are set to match
//   --record-input             add each call's input (after Parameters) to
//                              its "start" event
//   --task-ms N                how long each handler takes (default 2), so
//                              that Parallel branches overlap
//   --max-ms N                 abort a run that takes longer (default 20000):
//                              status HARNESS_TIMEOUT
//   --max-calls N              abort once the handlers were called N times in
//                              all (default 5000): status HARNESS_TIMEOUT
//   --npm-prefix DIR           where aws-local-stepfunctions is installed
//                              (DIR/node_modules/...); else $FLUX_NPM_PREFIX,
//                              else NODE_PATH/normal resolution, else
//                              $HOME/.cache/flux-engine/npm
//
// Wait states are overridden to 0 s and every Retry interval to 0.
//
// Prints ONE JSON object on stdout:
//   {"status": "SUCCEEDED" | "FAILED" | "TIMED_OUT" | "ABORTED" | "HARNESS_TIMEOUT",
//    "error": string|null, "cause": string|null, "output": JSON|null,
//    "events": [{"state", "seq", "phase": "start"|"end"|"fail", "call", "ms", "error"?, "input"?}],
//    "calls": {"STATE": n},
//    "log": [{"type": "StateEntered"|..., "state"?, "error"?}],  // the package's event log
//    "harness": {"package", "version", "node"}}
// `seq` is one counter over all Task handlers, so it orders starts and ends
// across Parallel branches. `log` holds every state (Choice, Wait, Pass,
// Fail...), in the package's order; events of Parallel branches and Map
// iterations reach it through a queue, so its order across branches is
// approximate: use `events` for ordering.
//
// Exit status: 0 whenever the harness worked (the execution's status is
// data); 2 with a message on stderr if it could not run (bad arguments,
// unreadable or invalid definition, package not found).
'use strict';

if (typeof Promise.withResolvers !== 'function') {
  require('./polyfill.cjs');
}

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { createRequire } = require('node:module');

const PACKAGE = 'aws-local-stepfunctions';

function die(message) {
  process.stderr.write(`sfn_local: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    definition: null,
    input: {},
    failures: {}, // state -> {times, error}
    queryRows: {},
    queryColumns: {},
    queryValue: {},
    runningPolls: {},
    lastCrawl: {},
    respond: {},
    taskMs: 2,
    recordInput: false,
    executionName: 'local-execution',
    maxMs: 20000,
    maxCalls: 5000,
    npmPrefix: null,
  };
  const keyValue = (flag, value) => {
    const at = value.indexOf('=');
    if (at <= 0) die(`${flag} needs STATE=VALUE, got ${JSON.stringify(value)}`);
    return [value.slice(0, at), value.slice(at + 1)];
  };
  const count = (flag, text) => {
    if (!/^\d+$/.test(text)) die(`${flag} needs a whole number, got ${JSON.stringify(text)}`);
    return Number(text);
  };
  const json = (flag, text) => {
    try {
      return JSON.parse(text);
    } catch (e) {
      return die(`${flag}: not JSON: ${e.message}`);
    }
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) die(`${flag} needs a value`);
      return argv[++i];
    };
    switch (flag) {
      case '--definition':
        opts.definition = value();
        break;
      case '--input':
        opts.input = json(flag, value());
        break;
      case '--input-file': {
        const file = value();
        let text;
        try {
          text = fs.readFileSync(file, 'utf8');
        } catch (e) {
          die(`cannot read ${file}: ${e.message}`);
        }
        opts.input = json(flag, text);
        break;
      }
      case '--fail-once':
      case '--fail-always': {
        const v = value();
        const at = v.indexOf('=');
        const state = at < 0 ? v : v.slice(0, at);
        const error = at < 0 ? 'States.TaskFailed' : v.slice(at + 1);
        if (!state || !error) die(`${flag} needs STATE or STATE=ERROR, got ${JSON.stringify(v)}`);
        opts.failures[state] = { times: flag === '--fail-once' ? 1 : Infinity, error };
        break;
      }
      case '--query-rows': {
        const [s, n] = keyValue(flag, value());
        opts.queryRows[s] = count(flag, n);
        break;
      }
      case '--query-columns': {
        const [s, n] = keyValue(flag, value());
        opts.queryColumns[s] = count(flag, n);
        break;
      }
      case '--query-value': {
        const [s, v] = keyValue(flag, value());
        opts.queryValue[s] = v;
        break;
      }
      case '--running-polls': {
        const [s, n] = keyValue(flag, value());
        opts.runningPolls[s] = count(flag, n);
        break;
      }
      case '--last-crawl': {
        const [s, v] = keyValue(flag, value());
        opts.lastCrawl[s] = v;
        break;
      }
      case '--respond': {
        const [s, v] = keyValue(flag, value());
        opts.respond[s] = json(flag, v);
        break;
      }
      case '--execution-name':
        opts.executionName = value();
        break;
      case '--record-input':
        opts.recordInput = true;
        break;
      case '--task-ms':
        opts.taskMs = count(flag, value());
        break;
      case '--max-ms':
        opts.maxMs = count(flag, value());
        break;
      case '--max-calls':
        opts.maxCalls = count(flag, value());
        break;
      case '--npm-prefix':
        opts.npmPrefix = value();
        break;
      case '-h':
      case '--help':
        process.stdout.write(fs.readFileSync(__filename, 'utf8').split('\n\'use strict\'')[0] + '\n');
        process.exit(0);
        break;
      default:
        die(`unknown argument ${JSON.stringify(flag)} (see --help)`);
    }
  }
  if (!opts.definition) die('--definition FILE.json is required');
  return opts;
}

/** The package, and the path of its package.json. */
function loadPackage(explicitPrefix) {
  const fromPrefix = (prefix) => {
    const req = createRequire(path.join(path.resolve(prefix), 'package.json'));
    return { lib: req(PACKAGE), pkg: packageJson(req.resolve(PACKAGE)) };
  };
  const prefixes = [];
  if (explicitPrefix) prefixes.push(explicitPrefix);
  else if (process.env.FLUX_NPM_PREFIX) prefixes.push(process.env.FLUX_NPM_PREFIX);
  const tried = [];
  for (const prefix of prefixes) {
    try {
      return fromPrefix(prefix);
    } catch (e) {
      die(`${PACKAGE} not found under ${prefix}/node_modules (${e.code || e.message}); install with: npm install --save-exact --prefix ${prefix} ${PACKAGE}@${pinnedVersion()}`);
    }
  }
  try {
    // NODE_PATH, or a node_modules beside or above this file.
    return { lib: require(PACKAGE), pkg: packageJson(require.resolve(PACKAGE)) };
  } catch (e) {
    tried.push('NODE_PATH');
  }
  const fallback = path.join(os.homedir(), '.cache/flux-engine/npm');
  try {
    return fromPrefix(fallback);
  } catch (e) {
    tried.push(fallback);
  }
  return die(`${PACKAGE} not found (tried ${tried.join(', ')}); install with: npm install --save-exact --prefix ${fallback} ${PACKAGE}@${pinnedVersion()}`);
}

/** The package.json of the package whose entry point is `main` (its "exports" hide it from require). */
function packageJson(main) {
  for (let dir = path.dirname(main); dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'package.json');
    try {
      if (JSON.parse(fs.readFileSync(candidate, 'utf8')).name === PACKAGE) return candidate;
    } catch {
      // not here: look further up
    }
  }
  return die(`cannot find the package.json of ${main}`);
}

function pinnedVersion() {
  try {
    return JSON.parse(fs.readFileSync(path.join(__dirname, 'package.json'), 'utf8')).dependencies[PACKAGE];
  } catch {
    return 'VERSION';
  }
}

/** Every state of the definition, Parallel branches and Map iterators included. */
function allStates(machine, into = new Map(), where = 'the top level') {
  if (!machine || typeof machine.States !== 'object' || machine.States === null) {
    die(`${where} has no States object`);
  }
  for (const [name, state] of Object.entries(machine.States)) {
    if (into.has(name)) {
      die(`the state name ${JSON.stringify(name)} is used twice; the harness records states by name`);
    }
    into.set(name, state);
    if (state && state.Type === 'Parallel') {
      (state.Branches || []).forEach((b, i) => allStates(b, into, `branch ${i} of ${name}`));
    } else if (state && state.Type === 'Map') {
      const inner = state.ItemProcessor || state.Iterator;
      if (inner) allStates(inner, into, `the iterator of ${name}`);
    }
  }
  return into;
}

/** "arn:aws:states:::aws-sdk:glue:getCrawler" -> {service: "glue", action: "getCrawler", sync: false} */
function parseResource(resource) {
  const r = String(resource || '');
  const m = /^arn:[^:]+:states:::(.+)$/.exec(r);
  if (!m) {
    if (/^arn:[^:]+:lambda:/.test(r)) return { service: 'lambda', action: 'function', sync: false };
    return { service: '', action: '', sync: false };
  }
  let parts = m[1].split(':');
  if (parts[0] === 'aws-sdk') parts = parts.slice(1);
  const service = parts[0] || '';
  let action = parts[1] || '';
  const sync = /\.sync$/.test(action); // also "name.sync:2": the 2 is parts[2]
  action = action.replace(/\.(sync|waitForTaskToken)$/, '');
  return { service, action, sync };
}

function queryExecution() {
  return {
    QueryExecutionId: 'q-LOCAL',
    Status: { State: 'SUCCEEDED' },
    ResultConfiguration: { OutputLocation: 's3://b/q.csv' },
  };
}

/** A plausible service response for `name`'s Resource, on its `call`-th call. */
function respond(opts, name, state, call, input) {
  if (Object.prototype.hasOwnProperty.call(opts.respond, name)) return opts.respond[name];
  const { service, action, sync } = parseResource(state.Resource);
  switch (`${service}:${action}`) {
    case 'elasticmapreduce:createCluster':
      return {
        ClusterId: 'j-LOCAL',
        ClusterArn: 'arn:aws:elasticmapreduce:us-east-1:123456789012:cluster/j-LOCAL',
      };
    case 'elasticmapreduce:addStep':
      return { StepId: 's-LOCAL' };
    case 'emr-serverless:startJobRun':
      return { ApplicationId: 'app-LOCAL', JobRunId: 'jr-LOCAL' };
    case 'athena:startQueryExecution':
      return sync ? { QueryExecution: queryExecution() } : { QueryExecutionId: 'q-LOCAL' };
    case 'athena:getQueryExecution':
      return { QueryExecution: queryExecution() };
    case 'athena:getQueryResults': {
      const rows = opts.queryRows[name] ?? 1;
      const columns = opts.queryColumns[name] ?? 16;
      const value = opts.queryValue[name] ?? '0';
      const names = Array.from({ length: columns }, (_, i) => `c${i}`);
      return {
        ResultSet: {
          Rows: [
            { Data: names.map((n) => ({ VarCharValue: n })) },
            ...Array.from({ length: rows }, () => ({ Data: names.map(() => ({ VarCharValue: value })) })),
          ],
          ResultSetMetadata: { ColumnInfo: names.map((n) => ({ Name: n, Label: n, Type: 'varchar' })) },
        },
        UpdateCount: 0,
      };
    }
    case 'glue:getCrawler': {
      const crawlerName = input && typeof input === 'object' && input.Name ? input.Name : 'crawler';
      if (call <= (opts.runningPolls[name] ?? 0)) {
        return { Crawler: { Name: crawlerName, State: 'RUNNING' } };
      }
      return {
        Crawler: { Name: crawlerName, State: 'READY', LastCrawl: { Status: opts.lastCrawl[name] ?? 'SUCCEEDED' } },
      };
    }
    case 'glue:startJobRun':
      return sync ? { Id: 'jr-LOCAL', JobRunState: 'SUCCEEDED' } : { JobRunId: 'jr-LOCAL' };
    case 'lambda:invoke':
      return { ExecutedVersion: '$LATEST', Payload: { ok: true, state: name }, StatusCode: 200 };
    case 's3:headObject':
      return { ContentLength: 1, ETag: '"x"' };
    case 's3:copyObject':
      return { CopyObjectResult: { ETag: '"x"' } };
    case 's3:putObject':
      return { ETag: '"x"' };
    case 's3:listObjectsV2':
      return { Contents: [{ Key: 'x', Size: 1, ETag: '"x"' }], KeyCount: 1, IsTruncated: false };
    case 'ecs:runTask':
      return { Tasks: [{ LastStatus: 'STOPPED', Containers: [{ ExitCode: 0 }] }] };
    case 'sns:publish':
      return { MessageId: 'm-LOCAL' };
    default:
      return {};
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  let definition;
  try {
    definition = JSON.parse(fs.readFileSync(opts.definition, 'utf8'));
  } catch (e) {
    die(`cannot read the definition ${opts.definition}: ${e.message}`);
  }
  const states = allStates(definition);
  const tasks = [...states].filter(([, s]) => s && s.Type === 'Task');

  for (const [label, table] of [
    ['--fail-once/--fail-always', opts.failures],
    ['--query-rows', opts.queryRows],
    ['--query-columns', opts.queryColumns],
    ['--query-value', opts.queryValue],
    ['--running-polls', opts.runningPolls],
    ['--last-crawl', opts.lastCrawl],
    ['--respond', opts.respond],
  ]) {
    for (const name of Object.keys(table)) {
      const state = states.get(name);
      if (!state || state.Type !== 'Task') {
        die(`${label} ${name}: the definition has no Task state of that name`);
      }
    }
  }

  const { lib, pkg } = loadPackage(opts.npmPrefix);
  const version = JSON.parse(fs.readFileSync(pkg, 'utf8')).version;

  const started = Date.now();
  const events = [];
  const calls = {};
  let seq = 0;
  let totalCalls = 0;
  let harnessTimeout = null;
  let execution = null;
  const record = (state, phase, call, extra) => {
    events.push({ state, seq: seq++, phase, call, ms: Date.now() - started, ...extra });
  };
  const abort = (why) => {
    if (harnessTimeout === null) {
      harnessTimeout = why;
      if (execution) execution.abort();
    }
  };

  const handlers = {};
  for (const [name, state] of tasks) {
    handlers[name] = async (input) => {
      const call = (calls[name] = (calls[name] || 0) + 1);
      totalCalls++;
      record(name, 'start', call, opts.recordInput ? { input } : {});
      if (totalCalls > opts.maxCalls) abort(`more than ${opts.maxCalls} task calls (a loop that never ends?)`);
      if (opts.taskMs > 0) await new Promise((r) => setTimeout(r, opts.taskMs));
      const failure = opts.failures[name];
      if (failure && call <= failure.times) {
        const error = new Error(`${name} failed (injected by the sfn_local harness, call ${call})`);
        error.name = failure.error;
        record(name, 'fail', call, { error: failure.error });
        throw error;
      }
      const result = respond(opts, name, state, call, input);
      record(name, 'end', call);
      return result;
    };
  }
  const waitTimeOverrides = {};
  const retryIntervalOverrides = {};
  for (const [name, state] of states) {
    if (state && state.Type === 'Wait') waitTimeOverrides[name] = 0;
    if (state && Array.isArray(state.Retry)) retryIntervalOverrides[name] = 0;
  }

  let machine;
  try {
    machine = new lib.StateMachine(definition);
  } catch (e) {
    die(`${PACKAGE} rejects the definition: ${e.message}`);
  }

  execution = machine.run(opts.input, {
    overrides: { taskResourceLocalHandlers: handlers, waitTimeOverrides, retryIntervalOverrides },
    // The package fills in Execution.Input and StartTime only.
    context: {
      Execution: {
        Id: `arn:aws:states:us-east-1:123456789012:execution:flux-local:${opts.executionName}`,
        Name: opts.executionName,
        RoleArn: 'arn:aws:iam::123456789012:role/flux-local',
      },
      StateMachine: { Id: 'arn:aws:states:us-east-1:123456789012:stateMachine:flux-local', Name: 'flux-local' },
    },
  });
  const log = [];
  const logDone = (async () => {
    for await (const ev of execution.eventLogs) {
      const entry = { type: ev.type };
      if (ev.state) entry.state = ev.state.name;
      if (ev.parentState) entry.parent = ev.parentState.name;
      if (typeof ev.index === 'number') entry.index = ev.index;
      if (ev.Error !== undefined) entry.error = ev.Error;
      log.push(entry);
    }
  })();
  const timer = setTimeout(() => abort(`the run took longer than ${opts.maxMs} ms`), opts.maxMs);
  if (harnessTimeout !== null) execution.abort();

  const out = { status: 'SUCCEEDED', error: null, cause: null, output: null };
  try {
    out.output = await execution.result;
  } catch (e) {
    const asText = (v) => (v === undefined || v === null ? null : typeof v === 'string' ? v : JSON.stringify(v));
    if (harnessTimeout !== null) {
      Object.assign(out, { status: 'HARNESS_TIMEOUT', error: 'HarnessTimeout', cause: harnessTimeout });
    } else if (e instanceof lib.ExecutionTimeoutError) {
      Object.assign(out, { status: 'TIMED_OUT', error: 'States.Timeout', cause: e.message });
    } else if (e instanceof lib.ExecutionAbortedError) {
      Object.assign(out, { status: 'ABORTED', error: null, cause: e.message });
    } else if (e instanceof lib.ExecutionError) {
      const c = e.cause || {};
      Object.assign(out, { status: 'FAILED', error: asText(c.name), cause: asText(c.message) });
    } else {
      clearTimeout(timer);
      die(`the run failed inside ${PACKAGE}: ${e && e.stack ? e.stack : e}`);
    }
  }
  clearTimeout(timer);
  // The log closes with the execution; do not wait for it forever.
  await Promise.race([logDone, new Promise((r) => setTimeout(r, 500))]);

  Object.assign(out, {
    events,
    calls,
    log,
    harness: { package: PACKAGE, version, node: process.version },
  });
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
}

main().catch((e) => die(e && e.stack ? e.stack : String(e)));
