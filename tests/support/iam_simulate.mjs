// Judges requests against IAM identity policies with a maintained evaluator,
// @cloud-copilot/iam-simulate (installed by ./scripts/setup through package.json), so
// that the tests do not rest on a judge of our own alone (tests/support/iam_grants.py).
//
// stdin:  a JSON list of {"policy": <policy document>, "action": "dynamodb:PutItem",
//         "resource": "<ARN>", "context": {"dynamodb:LeadingKeys": ["api/i-1"]},
//         "principal": "<ARN>"}; the account is read from the resource's ARN.
// stdout: a JSON list, one entry per request, in order: {"decision": "Allowed" |
//         "ImplicitlyDenied" | "ExplicitlyDenied", "allowedBy": [<Sid>, ...]}, or
//         {"error": "..."} where the evaluator could not judge the request as given.
// A missing evaluator is one line on stderr and exit status 3.

let runSimulation
try {
  ;({ runSimulation } = await import('@cloud-copilot/iam-simulate'))
} catch (error) {
  process.stderr.write(
    `the IAM policy evaluator @cloud-copilot/iam-simulate is not installed ` +
      `(${error.code ?? error.message}): run ./scripts/setup (npm install)\n`
  )
  process.exit(3)
}

async function judge({ policy, action, resource, context, principal }) {
  const simulation = {
    request: {
      principal,
      action,
      resource: { resource, accountId: resource.split(':')[4] },
      contextVariables: context ?? {}
    },
    identityPolicies: [{ name: 'policy', policy }],
    serviceControlPolicies: [],
    resourceControlPolicies: []
  }
  const response = await runSimulation(simulation, { simulationMode: 'Strict' })
  if (response.resultType === 'error') {
    return { error: JSON.stringify(response.errors) }
  }
  if (response.resultType !== 'single') {
    return { error: `expected one resource, the evaluator ran ${response.resultType}` }
  }
  // A context key the evaluator deems foreign to the action is dropped before it judges,
  // and `ForAllValues:` passes on a missing key: a dropped key would read as an Allow.
  const ignored = response.result.ignoredContextKeys ?? []
  if (ignored.length > 0) {
    return { error: `the evaluator ignored the context keys ${ignored.join(', ')} for ${action}` }
  }
  const allowing = response.result.analysis?.identityAnalysis?.allowStatements ?? []
  return {
    decision: response.overallResult,
    allowedBy: allowing.map((statement) => statement.explain?.identifier ?? '?')
  }
}

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const requests = JSON.parse(Buffer.concat(chunks).toString('utf8'))
const decisions = []
for (const request of requests) decisions.push(await judge(request))
process.stdout.write(JSON.stringify(decisions) + '\n')
