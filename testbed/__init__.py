"""Local stand-ins for AWS and small fleets, shared by the tests and the benchmarks.

Both need the same things done the same way (a moto server, Amazon's DynamoDB Local, a
DynamoDB call counter, real `flotilla agent` and `flotilla scheduler` processes, an
in-memory cluster), so that code lives once, here, and each side imports it:

    tests/support/  ->  testbed  <-  scripts/benchlib/

Why a folder of its own, at the checkout's root:
- the benchmarks must not import the tests package: a change to a test helper would break
  a benchmark, and test helpers may assume pytest (`pytest.fail` where a benchmark needs an
  exception);
- the tests must not import `scripts/benchlib`: importing it sets dummy AWS credentials,
  and its modules are `benchlib.*` only on the scripts' own path;
- it is not part of the `flotilla` distribution: setup.cfg maps only the product's folders,
  and nothing here belongs on an instance (the demo's `flotilla.cli.demo` ships; this is
  checkout-only, e.g. DynamoDB Local comes from `./scripts/setup`'s npm install).

Nothing here imports `tests`, `benchlib` or pytest. A missing tool raises `MissingTool`
saying how to install it; the tests turn that into a failure, never a skip. The
checkout's root must be on `sys.path`: pytest puts it there, `scripts/benchlib` on import.
"""
