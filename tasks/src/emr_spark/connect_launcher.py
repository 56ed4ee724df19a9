"""Run one unchanged PySpark script against flux-engine's warm Spark Connect server.

flux-engine runs this as `python3 -c <this file> SCRIPT ARG...` with SPARK_REMOTE pointing at the
server it started. The session is created here, before the script runs, so that the task's
`spark_conf` applies to it; a script that asks for the active session (or calls
`SparkSession.builder.getOrCreate()`) gets this one, exactly as it would get the session that
`spark-submit` created for it on EMR.
"""

import json
import os
import runpy
import sys

# pyspark's Connect client imports IPython, when it is installed, only to ask the terminal's
# width for a progress bar, and falls back without it: 0.25 s of every job's start here, for a
# job that has no terminal. IPython is hidden while the client loads, and importable again for
# the script.
_ipython_hidden = "IPython" not in sys.modules
if _ipython_hidden:
    sys.modules["IPython"] = None
try:
    import pyspark.sql.connect.session  # noqa: F401
finally:
    if _ipython_hidden:
        del sys.modules["IPython"]

from pyspark.sql import SparkSession  # noqa: E402

script, args = sys.argv[1], sys.argv[2:]
spark = (
    SparkSession.builder.remote(os.environ["SPARK_REMOTE"])
    .appName(os.environ.get("FLUX_TASK_ID", os.path.basename(script)))
    .getOrCreate()
)
for key, value in json.loads(os.environ.get("FLUX_SPARK_CONF", "{}")).items():
    try:
        spark.conf.set(key, value)
    except Exception as exc:  # a static setting cannot change on a running server
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(
            f"flux-engine: spark_conf `{key}` cannot be set on the warm Spark server ({first}); "
            "set it for the whole server with FLUX_SPARK_SERVER_CONF, or run this job with "
            "its own spark-submit: FLUX_SPARK_MODE=submit",
            file=sys.stderr,
        )
        sys.exit(2)

sys.argv = [script] + args
# spark-submit puts the script's folder first on sys.path; so does this.
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
try:
    runpy.run_path(script, run_name="__main__")
finally:
    spark.stop()
