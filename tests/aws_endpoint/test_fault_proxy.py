"""harness.py as the Rust tests use it: started as a subprocess, driven by
JSON lines, with boto3 clients talking to the proxy's endpoint."""

import base64
import hashlib
import http.client
import io
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import zlib

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
REGION = "eu-west-1"


class Harness:
    def __init__(self, cwd=REPO, script="tests/aws_endpoint/harness.py"):
        self.proc = subprocess.Popen(
            ["python3", script],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self.read(timeout=60)
        assert set(ready) == {"endpoint", "moto"}, ready
        self.endpoint, self.moto = ready["endpoint"], ready["moto"]

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def read(self, timeout=30):
        line = self.lines.get(timeout=timeout)
        assert line is not None, "the harness closed its stdout"
        return json.loads(line)

    def send(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        reply = self.read()
        assert self.lines.empty(), "one command, one answer line"
        return reply

    def ok(self, **cmd):
        reply = self.send(**cmd)
        assert reply["ok"] is True, reply
        return reply

    def requests(self):
        return self.ok(op="requests")["requests"]

    def client(self, service, attempts=1):
        config = Config(
            region_name=REGION,
            retries={"total_max_attempts": attempts, "mode": "standard"},
            s3={"addressing_style": "path"},
        )
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=config,
        )

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=15)


@pytest.fixture(scope="module")
def h():
    harness = Harness()
    yield harness
    harness.close()
    assert harness.proc.returncode == 0


@pytest.fixture(autouse=True)
def fresh_proxy(request):
    """Each test starts with no faults, no policy, no step outcomes, no log
    (moto's own state is kept: tests use their own names)."""
    if "h" in request.fixturenames:
        request.getfixturevalue("h").ok(op="reset")


def error_of(call, *args, **kwargs):
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    response = info.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"], response


def make_bucket(s3, name):
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})


def signed_headers(**extra):
    """Headers enough for the proxy and moto to see an S3 call (neither
    checks the signature)."""
    auth = (
        f"AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/s3/aws4_request, "
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=00"
    )
    headers = {
        "Authorization": auth,
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
        "x-amz-date": "20260101T000000Z",
    }
    headers.update(extra)
    return headers


def connect(h):
    host, port = urllib.parse.urlsplit(h.endpoint).netloc.split(":")
    return http.client.HTTPConnection(host, int(port), timeout=60)


def answer_of(conn):
    resp = conn.getresponse()
    return resp.status, resp.read()


def aws_chunked(data, chunk=4096):
    """An aws-chunked body with an unsigned trailer, as the SDKs stream
    PutObject and UploadPart bodies with a trailing checksum."""
    out = b""
    for i in range(0, len(data), chunk):
        piece = data[i : i + chunk]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big"))
    return out + b"0\r\nx-amz-checksum-crc32:" + crc + b"\r\n\r\n"


# ------------------------------------------------------------------------ S3


def test_s3_round_trip_multipart_and_large_bodies(h):
    s3 = h.client("s3")
    make_bucket(s3, "rt-bucket")
    s3.put_object(Bucket="rt-bucket", Key="a/1.txt", Body=b"hello")
    assert s3.get_object(Bucket="rt-bucket", Key="a/1.txt")["Body"].read() == b"hello"
    listed = s3.list_objects_v2(Bucket="rt-bucket", Prefix="a/")
    assert [o["Key"] for o in listed["Contents"]] == ["a/1.txt"]

    # Multipart with small parts: moto honours S3_UPLOAD_PART_MIN_SIZE=5 (a
    # 6-byte first part is enough, a 4-byte one is too small).
    def multipart(key, parts):
        upload = s3.create_multipart_upload(Bucket="rt-bucket", Key=key)["UploadId"]
        done = [
            {
                "PartNumber": n,
                "ETag": s3.upload_part(
                    Bucket="rt-bucket", Key=key, UploadId=upload, PartNumber=n, Body=data
                )["ETag"],
            }
            for n, data in enumerate(parts, 1)
        ]
        s3.complete_multipart_upload(
            Bucket="rt-bucket", Key=key, UploadId=upload, MultipartUpload={"Parts": done}
        )

    multipart("mp/ok", [b"123456", b"78"])
    assert s3.get_object(Bucket="rt-bucket", Key="mp/ok")["Body"].read() == b"12345678"
    code, status, _ = error_of(multipart, "mp/small", [b"1234", b"5"])
    assert (code, status) == ("EntityTooSmall", 400)

    # Tens of MB in one PUT, and a chunked body decoded before moto.
    big = os.urandom(1 << 20) * 24
    s3.put_object(Bucket="rt-bucket", Key="big/24mib", Body=big)
    got = s3.get_object(Bucket="rt-bucket", Key="big/24mib")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(big).digest()
    # A multipart upload whose parts go up at once, on several connections.
    transfer = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    s3.upload_fileobj(io.BytesIO(big[: 16 << 20]), "rt-bucket", "big/parallel", Config=transfer)
    got = s3.get_object(Bucket="rt-bucket", Key="big/parallel")["Body"].read()
    assert got == big[: 16 << 20]

    chunks = [bytes([i]) * 65536 for i in range(48)]
    conn = connect(h)
    conn.request(
        "PUT",
        "/rt-bucket/big/chunked",
        body=iter(chunks),
        headers=signed_headers(),
        encode_chunked=True,
    )
    assert conn.getresponse().read() == b""
    got = s3.get_object(Bucket="rt-bucket", Key="big/chunked")["Body"].read()
    assert got == b"".join(chunks)

    log = h.requests()
    assert [r["operation"] for r in log[:4]] == [
        "CreateBucket",
        "PutObject",
        "GetObject",
        "ListObjectsV2",
    ]
    chunked = [r for r in log if r["key"] == "big/chunked"][0]
    assert (chunked["operation"], chunked["status"]) == ("PutObject", 200)


def test_aws_chunked_bodies_and_connection_reuse(h):
    """What the Rust SDK may send: aws-chunked bodies with a trailing
    checksum (with a Content-Length, or HTTP-chunked on top), an Expect:
    100-continue, several calls on one kept-alive connection, one of them
    answered by the proxy."""
    s3 = h.client("s3")
    make_bucket(s3, "raw-bucket")
    data = os.urandom(100_000)
    body = aws_chunked(data)
    streaming = {
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": "x-amz-checksum-crc32",
    }
    conn = connect(h)
    conn.request("PUT", "/raw-bucket/a", body=body, headers=signed_headers(**streaming))
    assert conn.getresponse().read() == b""
    h.ok(op="fault", service="s3", operation="PutObject", kind="throttle")
    conn.request("PUT", "/raw-bucket/b", body=body, headers=signed_headers(**streaming))
    resp = conn.getresponse()
    assert (resp.status, resp.getheader("Content-Type")) == (503, "application/xml")
    assert b"<Code>SlowDown</Code>" in resp.read()
    conn.request(
        "PUT",
        "/raw-bucket/b",
        body=iter([body[:5000], body[5000:]]),
        headers=signed_headers(**streaming),
        encode_chunked=True,
    )
    assert answer_of(conn)[0] == 200
    conn.request("PUT", "/raw-bucket/c", body=b"xyz", headers=signed_headers(Expect="100-continue"))
    assert answer_of(conn)[0] == 200
    conn.request("HEAD", "/raw-bucket/a", headers=signed_headers())
    resp = conn.getresponse()
    assert (resp.status, resp.getheader("Content-Length"), resp.read()) == (200, "100000", b"")
    conn.close()
    for key, want in (("a", data), ("b", data), ("c", b"xyz")):
        assert s3.get_object(Bucket="raw-bucket", Key=key)["Body"].read() == want


def test_operations_are_identified(h):
    s3, glue, athena = h.client("s3"), h.client("glue"), h.client("athena")
    emr, serverless = h.client("emr"), h.client("emr-serverless")
    expected = []

    def call(client_call, operation, action, **kwargs):
        result = client_call(**kwargs)
        expected.append((operation, action))
        return result

    b = "ops-bucket"
    call(
        s3.create_bucket,
        "CreateBucket",
        "s3:CreateBucket",
        Bucket=b,
        CreateBucketConfiguration={"LocationConstraint": REGION},
    )
    call(s3.put_object, "PutObject", "s3:PutObject", Bucket=b, Key="d/k 1", Body=b"x")
    call(s3.head_object, "HeadObject", "s3:GetObject", Bucket=b, Key="d/k 1")
    call(s3.get_object, "GetObject", "s3:GetObject", Bucket=b, Key="d/k 1")
    call(
        s3.get_object_attributes,
        "GetObjectAttributes",
        "s3:GetObjectAttributes",
        Bucket=b,
        Key="d/k 1",
        ObjectAttributes=["ObjectSize"],
    )
    call(s3.list_objects_v2, "ListObjectsV2", "s3:ListBucket", Bucket=b, Prefix="d/")
    call(s3.list_objects, "ListObjects", "s3:ListBucket", Bucket=b)
    call(s3.head_bucket, "HeadBucket", "s3:ListBucket", Bucket=b)
    call(s3.get_bucket_location, "GetBucketLocation", "s3:GetBucketLocation", Bucket=b)
    call(
        s3.copy_object,
        "CopyObject",
        "s3:PutObject",
        Bucket=b,
        Key="d/copy",
        CopySource={"Bucket": b, "Key": "d/k 1"},
    )
    call(
        s3.delete_objects,
        "DeleteObjects",
        "s3:DeleteObject",
        Bucket=b,
        Delete={"Objects": [{"Key": "d/copy"}]},
    )
    call(s3.delete_object, "DeleteObject", "s3:DeleteObject", Bucket=b, Key="d/k 1")
    up = call(
        s3.create_multipart_upload, "CreateMultipartUpload", "s3:PutObject", Bucket=b, Key="m"
    )["UploadId"]
    etag = call(
        s3.upload_part,
        "UploadPart",
        "s3:PutObject",
        Bucket=b,
        Key="m",
        UploadId=up,
        PartNumber=1,
        Body=b"part",
    )["ETag"]
    call(s3.list_parts, "ListParts", "s3:ListMultipartUploadParts", Bucket=b, Key="m", UploadId=up)
    call(
        s3.complete_multipart_upload,
        "CompleteMultipartUpload",
        "s3:PutObject",
        Bucket=b,
        Key="m",
        UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    up = call(
        s3.create_multipart_upload, "CreateMultipartUpload", "s3:PutObject", Bucket=b, Key="m2"
    )["UploadId"]
    call(
        s3.abort_multipart_upload,
        "AbortMultipartUpload",
        "s3:AbortMultipartUpload",
        Bucket=b,
        Key="m2",
        UploadId=up,
    )

    call(
        glue.create_database,
        "CreateDatabase",
        "glue:CreateDatabase",
        DatabaseInput={"Name": "opsdb"},
    )
    call(
        glue.create_crawler,
        "CreateCrawler",
        "glue:CreateCrawler",
        Name="ops-crawler",
        Role="arn:aws:iam::123456789012:role/crawler",
        DatabaseName="opsdb",
        Targets={"S3Targets": [{"Path": f"s3://{b}/d/"}]},
    )
    call(glue.get_crawler, "GetCrawler", "glue:GetCrawler", Name="ops-crawler")
    qid = call(
        athena.start_query_execution,
        "StartQueryExecution",
        "athena:StartQueryExecution",
        QueryString="SELECT 1",
        ResultConfiguration={"OutputLocation": f"s3://{b}/athena/"},
    )["QueryExecutionId"]
    call(
        athena.get_query_execution,
        "GetQueryExecution",
        "athena:GetQueryExecution",
        QueryExecutionId=qid,
    )
    cluster = call(
        emr.run_job_flow,
        "RunJobFlow",
        "elasticmapreduce:RunJobFlow",
        Name="ops",
        ReleaseLabel="emr-7.0.0",
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
        Tags=[{"Key": "flux-engine:dag", "Value": "d"}],
        Instances={
            "InstanceCount": 1,
            "MasterInstanceType": "m5.xlarge",
            "KeepJobFlowAliveWhenNoSteps": True,
        },
    )["JobFlowId"]
    step = {
        "Name": "spark",
        "ActionOnFailure": "CONTINUE",
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["spark-submit", "job.py"]},
    }
    call(
        emr.add_job_flow_steps,
        "AddJobFlowSteps",
        "elasticmapreduce:AddJobFlowSteps",
        JobFlowId=cluster,
        Steps=[step],
    )
    app = call(
        serverless.create_application,
        "CreateApplication",
        "emr-serverless:CreateApplication",
        name="ops",
        releaseLabel="emr-7.0.0",
        type="SPARK",
    )["applicationId"]
    run = call(
        serverless.start_job_run,
        "StartJobRun",
        "emr-serverless:StartJobRun",
        applicationId=app,
        executionRoleArn="arn:aws:iam::123456789012:role/job",
        jobDriver={"sparkSubmit": {"entryPoint": "s3://b/job.py"}},
    )["jobRunId"]
    call(
        serverless.get_job_run,
        "GetJobRun",
        "emr-serverless:GetJobRun",
        applicationId=app,
        jobRunId=run,
    )
    call(
        serverless.cancel_job_run,
        "CancelJobRun",
        "emr-serverless:CancelJobRun",
        applicationId=app,
        jobRunId=run,
    )

    log = h.requests()
    assert [(r["operation"], r["action"]) for r in log] == expected
    assert all(r["status"] == 200 or r["status"] == 204 for r in log), log
    assert not any(r["injected"] or r["refused"] for r in log)
    put = log[1]
    assert (put["service"], put["bucket"], put["key"]) == ("s3", b, "d/k 1")
    assert put["resource"] == f"arn:aws:s3:::{b}/d/k 1"
    copy = log[9]
    assert copy["copy_source"] == {"bucket": b, "key": "d/k 1"}
    assert log[10]["keys"] == ["d/copy"]
    by_op = {r["operation"]: r for r in log}
    assert by_op["RunJobFlow"]["body"]["Tags"] == [{"Key": "flux-engine:dag", "Value": "d"}]
    assert by_op["AddJobFlowSteps"]["body"]["Steps"][0]["HadoopJarStep"]["Args"] == [
        "spark-submit",
        "job.py",
    ]
    assert by_op["StartJobRun"]["body"]["executionRoleArn"].endswith("role/job")
    assert {r["service"] for r in log} == {
        "s3",
        "glue",
        "athena",
        "elasticmapreduce",
        "emr-serverless",
    }


# ---------------------------------------------------------------------- faults


def test_s3_faults_answer_for_exactly_count_requests(h):
    s3 = h.client("s3")
    make_bucket(s3, "fault-bucket")
    s3.put_object(Bucket="fault-bucket", Key="k", Body=b"v")
    h.ok(op="clear_requests")

    assert h.ok(op="fault", service="s3", operation="GetObject", count=2, kind="throttle")["rule"]
    for _ in range(2):
        code, status, response = error_of(s3.get_object, Bucket="fault-bucket", Key="k")
        assert (code, status) == ("SlowDown", 503)
        assert response["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/xml"
        assert response["ResponseMetadata"]["RequestId"]
    assert s3.get_object(Bucket="fault-bucket", Key="k")["Body"].read() == b"v"

    h.ok(op="fault", service="s3", operation="PutObject", kind="5xx")
    assert error_of(s3.put_object, Bucket="fault-bucket", Key="k2", Body=b"v")[:2] == (
        "InternalError",
        500,
    )
    s3.put_object(Bucket="fault-bucket", Key="k2", Body=b"v")

    h.ok(op="fault", service="s3", operation="*", kind="denied")
    assert error_of(s3.list_objects_v2, Bucket="fault-bucket")[:2] == ("AccessDenied", 403)
    h.ok(op="fault", service="s3", operation="HeadObject", kind="denied")
    # A HEAD error has no body: the SDK knows it by its status alone.
    assert error_of(s3.head_object, Bucket="fault-bucket", Key="k")[:2] == ("403", 403)

    log = h.requests()
    assert [(r["operation"], r["status"], r["injected"], r["error_code"]) for r in log] == [
        ("GetObject", 503, "throttle", "SlowDown"),
        ("GetObject", 503, "throttle", "SlowDown"),
        ("GetObject", 200, None, None),
        ("PutObject", 500, "5xx", "InternalError"),
        ("PutObject", 200, None, None),
        ("ListObjectsV2", 403, "denied", "AccessDenied"),
        ("HeadObject", 403, "denied", "AccessDenied"),
    ]
    assert [f["fired"] for f in h.ok(op="faults")["faults"]] == [2, 1, 1, 1]

    # An SDK retries the throttling answer as it would S3's own.
    h.ok(op="fault", service="s3", operation="GetObject", count=2, kind="throttle")
    got = h.client("s3", attempts=3).get_object(Bucket="fault-bucket", Key="k")
    assert got["ResponseMetadata"]["RetryAttempts"] == 2


def test_json_service_faults(h):
    glue, athena, emr = h.client("glue"), h.client("athena"), h.client("emr")
    glue.create_database(DatabaseInput={"Name": "faultdb"})

    h.ok(op="fault", service="glue", operation="GetDatabase", count=2, kind="throttle")
    for _ in range(2):
        code, status, response = error_of(glue.get_database, Name="faultdb")
        assert (code, status) == ("ThrottlingException", 400)
        headers = response["ResponseMetadata"]["HTTPHeaders"]
        assert headers["x-amzn-errortype"] == "ThrottlingException"
        assert headers["content-type"] == "application/x-amz-json-1.1"
        assert response["Error"]["Message"] == "Rate exceeded"
    assert glue.get_database(Name="faultdb")["Database"]["Name"] == "faultdb"

    h.ok(op="fault", service="athena", operation="StartQueryExecution", kind="5xx")
    assert error_of(athena.start_query_execution, QueryString="SELECT 1")[:2] == (
        "InternalFailure",
        500,
    )
    h.ok(op="fault", service="elasticmapreduce", operation="ListClusters", kind="denied")
    code, status, response = error_of(emr.list_clusters)
    assert (code, status) == ("AccessDeniedException", 403)
    assert "elasticmapreduce:ListClusters" in response["Error"]["Message"]

    # service "*": the next request of any service.
    h.ok(op="fault", service="*", operation="*", kind="throttle")
    assert error_of(emr.list_clusters)[0] == "ThrottlingException"
    emr.list_clusters()

    h.ok(op="fault", service="glue", operation="GetDatabase", count=2, kind="throttle")
    got = h.client("glue", attempts=3).get_database(Name="faultdb")
    assert got["ResponseMetadata"]["RetryAttempts"] == 2

    injected = [(r["operation"], r["injected"]) for r in h.requests() if r["injected"]]
    assert injected == [
        ("GetDatabase", "throttle"),
        ("GetDatabase", "throttle"),
        ("StartQueryExecution", "5xx"),
        ("ListClusters", "denied"),
        ("ListClusters", "throttle"),
        ("GetDatabase", "throttle"),
        ("GetDatabase", "throttle"),
    ]


def test_cloudformation_lambda_and_iam(h):
    cfn, lam, iam = h.client("cloudformation"), h.client("lambda"), h.client("iam")
    # (No CreateStack: moto takes a second over its first template.)
    assert error_of(cfn.describe_stacks, StackName="flux-stack")[:2] == ("ValidationError", 400)
    cfn.list_stacks(StackStatusFilter=["CREATE_COMPLETE"])
    iam.list_roles()
    lam.list_functions()
    assert error_of(lam.get_function, FunctionName="no-such-fn")[:2] == (
        "ResourceNotFoundException",
        404,
    )

    # Query-protocol errors: the SDK reads the code and retries Throttling.
    h.ok(op="fault", service="cloudformation", operation="DescribeStacks", kind="throttle")
    code, status, response = error_of(cfn.describe_stacks, StackName="flux-stack")
    assert (code, status) == ("Throttling", 400)
    assert response["Error"]["Type"] == "Sender"
    h.ok(op="fault", service="cloudformation", operation="ListStacks", kind="5xx")
    got = h.client("cloudformation", attempts=2).list_stacks()
    assert got["ResponseMetadata"]["RetryAttempts"] == 1
    h.ok(op="fault", service="iam", operation="ListRoles", kind="denied")
    code, status, response = error_of(iam.list_roles)
    assert (code, status) == ("AccessDenied", 403)
    assert "iam:ListRoles" in response["Error"]["Message"]
    h.ok(op="fault", service="lambda", operation="ListFunctions", kind="throttle")
    assert error_of(lam.list_functions)[:2] == ("TooManyRequestsException", 429)

    # An unknown Lambda path is forwarded all the same.
    conn = connect(h)
    conn.request("GET", "/2099-01-01/unknown", headers={"Authorization": lambda_auth()})
    status, _ = answer_of(conn)
    conn.close()

    log = h.requests()
    assert [(r["service"], r["operation"], r["action"]) for r in log[:5]] == [
        ("cloudformation", "DescribeStacks", "cloudformation:DescribeStacks"),
        ("cloudformation", "ListStacks", "cloudformation:ListStacks"),
        ("iam", "ListRoles", "iam:ListRoles"),
        ("lambda", "ListFunctions", "lambda:ListFunctions"),
        ("lambda", "GetFunction", "lambda:GetFunction"),
    ]
    assert log[0]["body"] == {
        "Action": "DescribeStacks",
        "Version": "2010-05-15",
        "StackName": "flux-stack",
    }
    assert log[1]["body"]["StackStatusFilter.member.1"] == "CREATE_COMPLETE"
    injected = [(r["operation"], r["injected"], r["error_code"]) for r in log if r["injected"]]
    assert injected == [
        ("DescribeStacks", "throttle", "Throttling"),
        ("ListStacks", "5xx", "InternalFailure"),
        ("ListRoles", "denied", "AccessDenied"),
        ("ListFunctions", "throttle", "TooManyRequestsException"),
    ]
    unknown = log[-1]
    assert (unknown["service"], unknown["operation"], unknown["answered_by"]) == (
        "lambda",
        None,
        "moto",
    )
    assert unknown["status"] == status


def lambda_auth():
    return (
        f"AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/lambda/aws4_request, "
        "SignedHeaders=host, Signature=00"
    )


def test_bad_commands_are_answered_with_an_error(h):
    for cmd in (
        {"op": "fault", "service": "s3", "kind": "explode"},
        {"op": "fault", "service": "s3", "kind": "5xx", "count": 0},
        {"op": "allow_only", "policy": {"Statement": []}},
        {"op": "step_outcome", "step_id": "s-1", "state": "DONE"},
        {"op": "moto", "path": "moto-api/reset"},
        {"op": "no-such-op"},
    ):
        reply = h.send(**cmd)
        assert reply["ok"] is False and reply["error"], (cmd, reply)
    h.proc.stdin.write("not json\n\n")
    h.proc.stdin.flush()
    assert h.read()["ok"] is False  # the blank line gets no answer
    assert h.send(op="ping", id=7) == {"ok": True, "id": 7}


# -------------------------------------------------------------------------- IAM

POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Data",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": "arn:aws:s3:::iam-bucket/allowed/*",
        },
        {
            "Sid": "List",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": "arn:aws:s3:::iam-bucket",
            "Condition": {"StringLike": {"s3:prefix": ["allowed/*"]}},
        },
        {"Sid": "GlueRead", "Effect": "Allow", "Action": "glue:Get*", "Resource": "*"},
    ],
}


def test_allow_only_refuses_what_the_policy_does_not_grant(h):
    s3, glue = h.client("s3"), h.client("glue")
    make_bucket(s3, "iam-bucket")
    s3.put_object(Bucket="iam-bucket", Key="other/x", Body=b"o")
    h.ok(op="clear_requests")

    reply = h.ok(op="allow_only", policy=POLICY)
    assert (reply["statements"], reply["conditions_ignored"]) == (3, ["List"])

    s3.put_object(Bucket="iam-bucket", Key="allowed/a", Body=b"a")
    assert s3.get_object(Bucket="iam-bucket", Key="allowed/a")["Body"].read() == b"a"
    assert error_of(s3.put_object, Bucket="iam-bucket", Key="other/a", Body=b"a")[:2] == (
        "AccessDenied",
        403,
    )
    assert error_of(s3.get_object, Bucket="iam-bucket", Key="other/x")[0] == "AccessDenied"
    assert error_of(s3.delete_object, Bucket="iam-bucket", Key="allowed/a")[0] == "AccessDenied"
    assert s3.list_objects_v2(Bucket="iam-bucket", Prefix="allowed/")["KeyCount"] == 1
    # Multipart is s3:PutObject throughout.
    up = s3.create_multipart_upload(Bucket="iam-bucket", Key="allowed/mp")["UploadId"]
    etag = s3.upload_part(
        Bucket="iam-bucket", Key="allowed/mp", UploadId=up, PartNumber=1, Body=b"p"
    )["ETag"]
    s3.complete_multipart_upload(
        Bucket="iam-bucket",
        Key="allowed/mp",
        UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    # A copy needs to read its source too.
    code, _, _ = error_of(
        s3.copy_object,
        Bucket="iam-bucket",
        Key="allowed/copy",
        CopySource={"Bucket": "iam-bucket", "Key": "other/x"},
    )
    assert code == "AccessDenied"
    # Other services: the action decides (resources matched leniently).
    assert error_of(glue.get_crawler, Name="none")[0] == "EntityNotFoundException"  # reached moto
    code, status, response = error_of(glue.create_database, DatabaseInput={"Name": "iamdb"})
    assert (code, status) == ("AccessDeniedException", 403)
    assert "glue:CreateDatabase" in response["Error"]["Message"]

    log = h.requests()
    refused = [
        (r["operation"], r["refused_action"], r["refused_resource"]) for r in log if r["refused"]
    ]
    assert refused == [
        ("PutObject", "s3:PutObject", "arn:aws:s3:::iam-bucket/other/a"),
        ("GetObject", "s3:GetObject", "arn:aws:s3:::iam-bucket/other/x"),
        ("DeleteObject", "s3:DeleteObject", "arn:aws:s3:::iam-bucket/allowed/a"),
        ("CopyObject", "s3:GetObject", "arn:aws:s3:::iam-bucket/other/x"),
        ("CreateDatabase", "glue:CreateDatabase", None),
    ]
    assert all(r["injected"] == "denied" and r["status"] == 403 for r in log if r["refused"])
    listing = [r for r in log if r["operation"] == "ListObjectsV2"][0]
    assert listing["conditions_ignored"] == ["List"]

    h.ok(op="allow_all")
    s3.delete_object(Bucket="iam-bucket", Key="allowed/a")
    glue.create_database(DatabaseInput={"Name": "iamdb"})


# -------------------------------------------------------------------- EMR steps


def test_emr_step_outcomes_and_cancel(h):
    emr = h.client("emr")
    cluster = emr.run_job_flow(
        Name="steps",
        ReleaseLabel="emr-7.0.0",
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
        Instances={
            "InstanceCount": 1,
            "MasterInstanceType": "m5.xlarge",
            "KeepJobFlowAliveWhenNoSteps": True,
        },
    )["JobFlowId"]

    def add_step(name):
        step = {
            "Name": name,
            "ActionOnFailure": "CONTINUE",
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["spark-submit", name]},
        }
        return emr.add_job_flow_steps(JobFlowId=cluster, Steps=[step])["StepIds"][0]

    def status(step_id):
        return emr.describe_step(ClusterId=cluster, StepId=step_id)["Step"]["Status"]

    failed, completed, slow, cancelled = (add_step(n) for n in ("f", "c", "s", "x"))
    assert status(failed)["State"] in ("PENDING", "RUNNING")  # moto's own

    failure = {"Reason": "Spark failed", "Message": "exit 1", "LogFile": "s3://logs/s-1/stderr.gz"}
    h.ok(op="step_outcome", step_id=failed, state="FAILED", failure=failure)
    got = status(failed)
    assert got["State"] == "FAILED"
    assert got["FailureDetails"] == failure
    assert got["Timeline"]["EndDateTime"] >= got["Timeline"]["StartDateTime"]

    h.ok(op="step_outcome", step_id=completed, state="COMPLETED")
    got = status(completed)
    assert got["State"] == "COMPLETED" and "FailureDetails" not in got
    assert "EndDateTime" in got["Timeline"]

    h.ok(op="step_outcome", step_id=slow, state="COMPLETED", after_polls=2)
    assert [status(slow)["State"] for _ in range(3)] == ["RUNNING", "RUNNING", "COMPLETED"]

    listed = emr.list_steps(ClusterId=cluster, StepStates=["FAILED", "COMPLETED"])["Steps"]
    assert {s["Id"]: s["Status"]["State"] for s in listed} == {
        failed: "FAILED",
        completed: "COMPLETED",
        slow: "COMPLETED",
    }

    info = emr.cancel_steps(ClusterId=cluster, StepIds=[cancelled])["CancelStepsInfoList"]
    assert info == [{"StepId": cancelled, "Status": "SUBMITTED", "Reason": ""}]
    assert status(cancelled)["State"] == "CANCELLED"

    # "*": every step, current and future; a cancelled step stays cancelled.
    h.ok(op="step_outcome", step_id="*", state="FAILED", failure={"Reason": "all"})
    later = add_step("later")
    assert status(later)["FailureDetails"]["Reason"] == "all"
    assert status(completed)["State"] == "FAILED"
    assert status(cancelled)["State"] == "CANCELLED"

    log = h.requests()
    cancel = [r for r in log if r["operation"] == "CancelSteps"]
    assert len(cancel) == 1
    assert (cancel[0]["status"], cancel[0]["answered_by"]) == (200, "proxy")
    assert cancel[0]["action"] == "elasticmapreduce:CancelSteps"
    assert cancel[0]["body"]["StepIds"] == [cancelled]


# ------------------------------------------------------------------ moto control


def test_moto_passthrough_and_glue_crawls(h):
    assert h.ok(op="moto", method="POST", path="/moto-api/reset")["status"] == 200
    glue = h.client("glue")
    glue.create_database(DatabaseInput={"Name": "crawldb"})
    glue.create_crawler(
        Name="crawler",
        Role="arn:aws:iam::123456789012:role/crawler",
        DatabaseName="crawldb",
        Targets={"S3Targets": [{"Path": "s3://crawl-bucket/data/"}]},
    )

    # moto's default for glue::crawl: manual, one tick, and only ListCrawls
    # ticks, so GetCrawler alone sees the crawler RUNNING for ever.
    glue.start_crawler(Name="crawler")
    assert [glue.get_crawler(Name="crawler")["Crawler"]["State"] for _ in range(3)] == [
        "RUNNING"
    ] * 3
    assert glue.list_crawls(CrawlerName="crawler")["Crawls"][0]["State"] == "COMPLETED"
    assert glue.get_crawler(Name="crawler")["Crawler"]["State"] == "READY"

    transition = {"model_name": "glue::crawl", "transition": {"progression": "immediate"}}
    reply = h.ok(
        op="moto", method="POST", path="/moto-api/state-manager/set-transition", body=transition
    )
    assert reply["status"] == 201
    try:
        glue.start_crawler(Name="crawler")
        crawler = glue.get_crawler(Name="crawler")["Crawler"]
        assert crawler["State"] == "READY"
        assert crawler["LastCrawl"]["Status"] == "COMPLETED"
        # The crawl makes no table: tests create the tables it would.
        assert glue.get_tables(DatabaseName="crawldb")["TableList"] == []
    finally:
        h.ok(
            op="moto",
            method="POST",
            path="/moto-api/state-manager/unset-transition",
            body={"model_name": "glue::crawl"},
        )
    reply = h.ok(
        op="moto",
        method="GET",
        path="/moto-api/state-manager/get-transition?model_name=glue::crawl",
    )
    assert reply["body"] == {"progression": "manual", "times": 1}
    # The control calls went to moto directly, not through the proxy.
    assert not [r for r in h.requests() if r["service"] == "moto-api"]


def test_athena_results_queued_through_moto(h):
    results = {
        "region": REGION,  # moto's default is us-east-1
        "results": [
            {
                "rows": [{"Data": [{"VarCharValue": "n"}]}, {"Data": [{"VarCharValue": "42"}]}],
                "column_info": [{"Name": "n", "Type": "bigint"}],
            }
        ],
    }
    reply = h.ok(
        op="moto", method="POST", path="/moto-api/static/athena/query-results", body=results
    )
    assert reply["status"] == 201
    athena = h.client("athena")
    # moto assigns a queued result to the next StartQueryExecution.
    qid = athena.start_query_execution(QueryString="SELECT count(*) AS n FROM t")[
        "QueryExecutionId"
    ]
    state = athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]["Status"]["State"]
    assert state == "SUCCEEDED"
    got = athena.get_query_results(QueryExecutionId=qid)["ResultSet"]
    assert [row["Data"][0]["VarCharValue"] for row in got["Rows"]] == ["n", "42"]
    assert got["ResultSetMetadata"]["ColumnInfo"][0]["Name"] == "n"
    qid = athena.start_query_execution(QueryString="SELECT 2")["QueryExecutionId"]
    assert athena.get_query_results(QueryExecutionId=qid)["ResultSet"]["Rows"] == []


# ------------------------------------------------------------------- lifecycle


def alive(pid):
    """Whether a process lives (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


def answers(url):
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def wait_until(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.parametrize("how", ["eof", "sigterm", "stop", "sigkill"])
def test_nothing_outlives_the_harness(how, tmp_path):
    harness = Harness(cwd=str(tmp_path), script=os.path.join(HERE, "harness.py"))
    pids = harness.ok(op="pids")
    assert pids["harness"] == harness.proc.pid
    moto_pid = pids["moto"]
    assert alive(moto_pid) and answers(harness.moto) and answers(harness.endpoint)
    assert harness.ok(op="moto", method="POST", path="/moto-api/reset")["status"] == 200

    if how == "eof":
        harness.proc.stdin.close()
    elif how == "sigterm":
        harness.proc.send_signal(signal.SIGTERM)
    elif how == "stop":
        harness.ok(op="stop")
    else:
        harness.proc.kill()
    code = harness.proc.wait(timeout=15)
    assert code == (-signal.SIGKILL if how == "sigkill" else 0)
    # A killed multi-threaded process can show its leader as a zombie while
    # other threads still hold its sockets for a moment: wait for both.
    gone = wait_until(lambda: not alive(moto_pid) and not answers(harness.moto))
    assert gone, f"moto ({moto_pid}) outlived the harness"
    assert not answers(harness.endpoint)
