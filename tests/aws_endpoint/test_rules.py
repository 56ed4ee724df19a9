"""The proxy's pure parts, without a server: how a request is identified,
how a policy decides, how an injected error looks, how steps are rewritten."""

import json
import xml.etree.ElementTree as ET

import pytest

from aws_requests import identify, logged_body
from fault_proxy import CommandError, FaultRule, Steps, StepOutcome, error_answer
from iam_policy import Policy, PolicyError


def s3_headers(**extra):
    auth = (
        "AWS4-HMAC-SHA256 Credential=testing/20260101/eu-west-1/s3/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=abc"
    )
    return dict({"Authorization": auth}, **extra)


S3_CASES = [
    # method, path+query, extra headers, operation, action, bucket, key
    ("GET", "/", {}, "ListBuckets", "s3:ListAllMyBuckets", None, None),
    ("PUT", "/bkt", {}, "CreateBucket", "s3:CreateBucket", "bkt", None),
    ("HEAD", "/bkt", {}, "HeadBucket", "s3:ListBucket", "bkt", None),
    ("GET", "/bkt?list-type=2&prefix=a", {}, "ListObjectsV2", "s3:ListBucket", "bkt", None),
    ("GET", "/bkt/?encoding-type=url", {}, "ListObjects", "s3:ListBucket", "bkt", None),
    ("GET", "/bkt?location", {}, "GetBucketLocation", "s3:GetBucketLocation", "bkt", None),
    (
        "GET",
        "/bkt?uploads",
        {},
        "ListMultipartUploads",
        "s3:ListBucketMultipartUploads",
        "bkt",
        None,
    ),
    ("POST", "/bkt?delete", {}, "DeleteObjects", "s3:DeleteObject", "bkt", None),
    ("DELETE", "/bkt", {}, "DeleteBucket", "s3:DeleteBucket", "bkt", None),
    ("PUT", "/bkt/a/b.txt", {}, "PutObject", "s3:PutObject", "bkt", "a/b.txt"),
    ("PUT", "/bkt/a%20b%2Bc/d?x-id=PutObject", {}, "PutObject", "s3:PutObject", "bkt", "a b+c/d"),
    ("GET", "/bkt/k?x-id=GetObject", {}, "GetObject", "s3:GetObject", "bkt", "k"),
    ("GET", "/bkt/k?versionId=3", {}, "GetObject", "s3:GetObjectVersion", "bkt", "k"),
    ("HEAD", "/bkt/k", {}, "HeadObject", "s3:GetObject", "bkt", "k"),
    ("DELETE", "/bkt/k?x-id=DeleteObject", {}, "DeleteObject", "s3:DeleteObject", "bkt", "k"),
    ("POST", "/bkt/k?uploads", {}, "CreateMultipartUpload", "s3:PutObject", "bkt", "k"),
    ("PUT", "/bkt/k?partNumber=1&uploadId=U", {}, "UploadPart", "s3:PutObject", "bkt", "k"),
    ("POST", "/bkt/k?uploadId=U", {}, "CompleteMultipartUpload", "s3:PutObject", "bkt", "k"),
    (
        "DELETE",
        "/bkt/k?uploadId=U",
        {},
        "AbortMultipartUpload",
        "s3:AbortMultipartUpload",
        "bkt",
        "k",
    ),
    ("GET", "/bkt/k?uploadId=U", {}, "ListParts", "s3:ListMultipartUploadParts", "bkt", "k"),
    ("GET", "/bkt/k?attributes", {}, "GetObjectAttributes", "s3:GetObjectAttributes", "bkt", "k"),
    ("GET", "/bkt/k?tagging", {}, "GetObjectTagging", "s3:GetObjectTagging", "bkt", "k"),
    (
        "PUT",
        "/bkt/k?x-id=CopyObject",
        {"x-amz-copy-source": "src/x%2Fy"},
        "CopyObject",
        "s3:PutObject",
        "bkt",
        "k",
    ),
    (
        "PUT",
        "/bkt/k?partNumber=2&uploadId=U",
        {"x-amz-copy-source": "/src/x"},
        "UploadPartCopy",
        "s3:PutObject",
        "bkt",
        "k",
    ),
]


@pytest.mark.parametrize("method,raw,extra,operation,action,bucket,key", S3_CASES)
def test_s3_operations(method, raw, extra, operation, action, bucket, key):
    info = identify(method, raw, s3_headers(**extra), b"")
    assert (info["service"], info["region"]) == ("s3", "eu-west-1")
    assert (info["operation"], info["action"]) == (operation, action)
    assert (info["bucket"], info["key"]) == (bucket, key)


def test_s3_resources_and_extra_requirements():
    info = identify("PUT", "/bkt/a%20b/c", s3_headers(), b"")
    assert info["resource"] == "arn:aws:s3:::bkt/a b/c"
    assert info["requirements"] == [("s3:PutObject", "arn:aws:s3:::bkt/a b/c")]
    info = identify("GET", "/bkt?list-type=2", s3_headers(), b"")
    assert info["requirements"] == [("s3:ListBucket", "arn:aws:s3:::bkt")]
    # A copy reads its source.
    info = identify(
        "PUT", "/bkt/k", s3_headers(**{"x-amz-copy-source": "/src/x%2Fy?versionId=1"}), b""
    )
    assert info["requirements"] == [
        ("s3:PutObject", "arn:aws:s3:::bkt/k"),
        ("s3:GetObject", "arn:aws:s3:::src/x/y"),
    ]
    # A multi-object delete deletes each key it names.
    body = (
        b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<Object><Key>p/1</Key></Object><Object><Key>q/2</Key></Object></Delete>"
    )
    info = identify("POST", "/bkt?delete", s3_headers(), body)
    assert info["keys"] == ["p/1", "q/2"]
    assert info["requirements"] == [
        ("s3:DeleteObject", "arn:aws:s3:::bkt/p/1"),
        ("s3:DeleteObject", "arn:aws:s3:::bkt/q/2"),
    ]


def json_headers(service, target=None):
    headers = {
        "Authorization": f"AWS4-HMAC-SHA256 Credential=AKID/20260101/eu-west-1/{service}/aws4_request, "
        "SignedHeaders=host, Signature=abc"
    }
    if target:
        headers["X-Amz-Target"] = target
    return headers


@pytest.mark.parametrize(
    "service,target,operation",
    [
        ("elasticmapreduce", "ElasticMapReduce.AddJobFlowSteps", "AddJobFlowSteps"),
        ("glue", "AWSGlue.CreateCrawler", "CreateCrawler"),
        ("athena", "AmazonAthena.StartQueryExecution", "StartQueryExecution"),
        ("states", "AWSStepFunctions.GetExecutionHistory", "GetExecutionHistory"),
    ],
)
def test_json_protocol_operations(service, target, operation):
    info = identify("POST", "/", json_headers(service, target), b"{}")
    assert (info["service"], info["operation"]) == (service, operation)
    assert info["action"] == f"{service}:{operation}"
    assert info["requirements"] == [(f"{service}:{operation}", None)]
    # Unsigned, the target alone names the service.
    assert identify("POST", "/", {"X-Amz-Target": target}, b"{}")["service"] == service


@pytest.mark.parametrize(
    "method,path,operation",
    [
        ("POST", "/applications", "CreateApplication"),
        ("GET", "/applications/00abc", "GetApplication"),
        ("POST", "/applications/00abc/start", "StartApplication"),
        ("POST", "/applications/00abc/jobruns", "StartJobRun"),
        ("GET", "/applications/00abc/jobruns", "ListJobRuns"),
        ("GET", "/applications/00abc/jobruns/00run", "GetJobRun"),
        ("DELETE", "/applications/00abc/jobruns/00run", "CancelJobRun"),
        ("GET", "/tags/arn%3Aaws%3Aemr-serverless", "ListTagsForResource"),
    ],
)
def test_emr_serverless_operations(method, path, operation):
    info = identify(method, path, json_headers("emr-serverless"), b"")
    assert (info["service"], info["operation"]) == ("emr-serverless", operation)
    assert info["action"] == f"emr-serverless:{operation}"


@pytest.mark.parametrize(
    "method,path,operation",
    [
        ("POST", "/2015-03-31/functions", "CreateFunction"),
        ("GET", "/2015-03-31/functions/", "ListFunctions"),
        ("GET", "/2015-03-31/functions/flux-fn", "GetFunction"),
        (
            "GET",
            "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aeu-west-1%3A1%3Afunction%3Af",
            "GetFunction",
        ),
        ("DELETE", "/2015-03-31/functions/flux-fn", "DeleteFunction"),
        ("POST", "/2015-03-31/functions/flux-fn/invocations", "Invoke"),
        ("GET", "/2015-03-31/functions/flux-fn/configuration", "GetFunctionConfiguration"),
        ("PUT", "/2015-03-31/functions/flux-fn/code", "UpdateFunctionCode"),
        ("GET", "/2017-03-31/tags/arn%3Aaws%3Alambda", "ListTags"),
    ],
)
def test_lambda_operations(method, path, operation):
    info = identify(method, path + "?Qualifier=1", json_headers("lambda"), b"")
    assert (info["service"], info["operation"]) == ("lambda", operation)
    assert info["action"] == f"lambda:{operation}"


def test_unknown_lambda_paths_have_no_operation():
    info = identify("GET", "/2099-01-01/whatever", json_headers("lambda"), b"")
    assert (info["service"], info["operation"], info["requirements"]) == ("lambda", None, [])


def test_query_protocol_operations():
    headers = dict(json_headers("cloudformation"), **{"Content-Type": FORM})
    body = b"Action=CreateStack&Version=2010-05-15&StackName=flux&TemplateBody=%7B%7D"
    info = identify("POST", "/", headers, body)
    assert (info["service"], info["operation"]) == ("cloudformation", "CreateStack")
    assert info["requirements"] == [("cloudformation:CreateStack", None)]
    assert logged_body("cloudformation", "/", body) == {
        "Action": "CreateStack",
        "Version": "2010-05-15",
        "StackName": "flux",
        "TemplateBody": "{}",
    }
    # The Action may be in the query string.
    info = identify("GET", "/?Action=ListRoles&Version=2010-05-08", json_headers("iam"), b"")
    assert (info["service"], info["operation"], info["action"]) == (
        "iam",
        "ListRoles",
        "iam:ListRoles",
    )
    assert identify("POST", "/", json_headers("cloudformation"), b"")["operation"] is None


def test_lambda_bodies_are_logged_without_their_code():
    body = json.dumps({"FunctionName": "f", "Code": {"ZipFile": "UEsDBA=="}}).encode()
    assert logged_body("lambda", "/2015-03-31/functions", body) == {
        "FunctionName": "f",
        "Code": {"ZipFile": "<8 base64 characters>"},
    }
    assert logged_body("lambda", "/x", b"not json") is None


FORM = "application/x-www-form-urlencoded; charset=utf-8"


def test_unknown_and_control_requests():
    assert identify("GET", "/x", {}, b"")["service"] is None
    assert identify("GET", "/x", {}, b"")["requirements"] == []
    assert identify("POST", "/moto-api/reset", {}, b"")["service"] == "moto-api"


def test_presigned_url_scope():
    raw = "/bkt/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20260101%2Feu-west-1%2Fs3%2Faws4_request"
    info = identify("GET", raw, {}, b"")
    assert (info["service"], info["operation"], info["akid"]) == ("s3", "GetObject", "AK")


POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Read",
            "Effect": "Allow",
            "Action": ["s3:Get*"],
            "Resource": ["arn:aws:s3:::bkt/in/*"],
        },
        {
            "Sid": "Write",
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": "arn:aws:s3:::bkt/out/*",
        },
        {
            "Sid": "List",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": "arn:aws:s3:::bkt",
            "Condition": {"StringLike": {"s3:prefix": ["in/*"]}},
        },
        {
            "Sid": "NoSecret",
            "Effect": "Deny",
            "Action": "s3:*",
            "Resource": "arn:aws:s3:::bkt/in/secret*",
        },
        {"Sid": "Glue", "Effect": "Allow", "Action": "glue:Get*", "Resource": "*"},
        {
            "Sid": "Emr",
            "Effect": "Allow",
            "Action": ["elasticmapreduce:AddJobFlowSteps", "elasticmapreduce:DescribeStep"],
            "Resource": "arn:aws:elasticmapreduce:*:*:cluster/*",
        },
        {
            "Sid": "Athena",
            "Effect": "Allow",
            "NotAction": ["athena:Delete*", "s3:*", "glue:*", "elasticmapreduce:*"],
            "Resource": "*",
        },
    ],
}


@pytest.mark.parametrize(
    "action,resource,allowed,conditions",
    [
        ("s3:GetObject", "arn:aws:s3:::bkt/in/a/b", True, []),
        ("S3:getobject", "arn:aws:s3:::bkt/in/a", True, []),  # actions ignore case
        ("s3:GetObject", "arn:aws:s3:::bkt/IN/a", False, []),  # resources do not
        ("s3:GetObject", "arn:aws:s3:::bkt/out/a", False, []),
        ("s3:PutObject", "arn:aws:s3:::bkt/out/a", True, []),
        ("s3:PutObject", "arn:aws:s3:::other/out/a", False, []),
        ("s3:DeleteObject", "arn:aws:s3:::bkt/out/a", False, []),
        ("s3:ListBucket", "arn:aws:s3:::bkt", True, ["List"]),
        ("s3:ListBucket", "arn:aws:s3:::bkt2", False, []),
        ("s3:GetObject", "arn:aws:s3:::bkt/in/secret.txt", False, []),  # explicit deny
        ("glue:GetCrawler", None, True, []),
        ("glue:CreateCrawler", None, False, []),
        ("elasticmapreduce:AddJobFlowSteps", None, True, []),  # lenient: same service
        ("elasticmapreduce:RunJobFlow", None, False, []),
        ("athena:StartQueryExecution", None, True, []),
        ("athena:DeleteWorkGroup", None, False, []),
    ],
)
def test_policy_decisions(action, resource, allowed, conditions):
    decision = Policy(POLICY).decide([(action, resource)])
    assert decision["allowed"] is allowed
    assert decision["conditions_ignored"] == conditions
    if not allowed:
        assert (decision["action"], decision["resource"]) == (action, resource)


def test_policy_lenient_resources_stay_within_their_service():
    policy = Policy(
        {"Statement": {"Effect": "Allow", "Action": "*", "Resource": "arn:aws:glue:*:*:crawler/x"}}
    )
    assert policy.decide([("glue:StartCrawler", None)])["allowed"]
    assert not policy.decide([("athena:StartQueryExecution", None)])["allowed"]
    assert not policy.decide([("s3:GetObject", "arn:aws:s3:::b/k")])["allowed"]


def test_policy_all_requirements_must_pass():
    policy = Policy(POLICY)
    decision = policy.decide(
        [("s3:PutObject", "arn:aws:s3:::bkt/out/k"), ("s3:GetObject", "arn:aws:s3:::bkt/out/src")]
    )
    assert not decision["allowed"]
    assert decision["action"] == "s3:GetObject"


@pytest.mark.parametrize(
    "doc",
    [
        None,
        {},
        {"Statement": []},
        {"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]},
        {"Statement": [{"Effect": "Allow", "Resource": "*"}]},
        {"Statement": [{"Effect": "Allow", "Action": "*"}]},
        {"Statement": [{"Effect": "Allow", "Action": 3, "Resource": "*"}]},
    ],
)
def test_policy_rejects_malformed_documents(doc):
    with pytest.raises(PolicyError):
        Policy(doc)


@pytest.mark.parametrize(
    "service,kind,status,code,content_type",
    [
        ("s3", "throttle", 503, "SlowDown", "application/xml"),
        ("s3", "5xx", 500, "InternalError", "application/xml"),
        ("s3", "denied", 403, "AccessDenied", "application/xml"),
        ("glue", "throttle", 400, "ThrottlingException", "application/x-amz-json-1.1"),
        ("athena", "5xx", 500, "InternalFailure", "application/x-amz-json-1.1"),
        ("elasticmapreduce", "denied", 403, "AccessDeniedException", "application/x-amz-json-1.1"),
        ("emr-serverless", "throttle", 429, "ThrottlingException", "application/json"),
        ("states", "throttle", 400, "ThrottlingException", "application/x-amz-json-1.0"),
        ("states", "denied", 403, "AccessDeniedException", "application/x-amz-json-1.0"),
        ("lambda", "throttle", 429, "TooManyRequestsException", "application/json"),
        ("lambda", "5xx", 500, "ServiceException", "application/json"),
        ("cloudformation", "throttle", 400, "Throttling", "text/xml"),
        ("cloudformation", "5xx", 500, "InternalFailure", "text/xml"),
        ("iam", "denied", 403, "AccessDenied", "text/xml"),
    ],
)
def test_error_answers(service, kind, status, code, content_type):
    got_status, headers, body, got_code = error_answer(service, kind, "POST", "x:Y")
    headers = dict(headers)
    assert (got_status, got_code, headers["Content-Type"]) == (status, code, content_type)
    if service == "s3":
        assert f"<Code>{code}</Code>".encode() in body
        assert headers["x-amz-request-id"]
        assert error_answer(service, kind, "HEAD")[2] == b""
    elif service in ("cloudformation", "iam"):
        root = ET.fromstring(body)
        ns = {"aws": root.tag[1:].split("}")[0]}
        assert root.tag.endswith("ErrorResponse")
        assert root.find("aws:Error/aws:Code", ns).text == code
        assert root.find("aws:Error/aws:Type", ns).text == (
            "Receiver" if kind == "5xx" else "Sender"
        )
        assert root.find("aws:Error/aws:Message", ns).text
        assert root.find("aws:RequestId", ns).text == headers["x-amzn-RequestId"]
    else:
        assert json.loads(body)["__type"] == code
        assert headers["x-amzn-ErrorType"] == code
        assert headers["x-amzn-RequestId"]


def test_fault_rules():
    rule = FaultRule({"service": "glue", "operation": "GetCrawler", "count": 2, "kind": "5xx"})
    assert rule.matches("glue", "GetCrawler") and not rule.matches("glue", "StartCrawler")
    rule.fired = 2
    assert not rule.matches("glue", "GetCrawler")
    forever = FaultRule({"service": "*", "kind": "throttle", "count": -1})
    forever.fired = 1000
    assert forever.matches("s3", "PutObject")
    for bad in ({"kind": "nope"}, {"kind": "5xx", "count": 0}, {"kind": "5xx", "count": "2"}):
        with pytest.raises(CommandError):
            FaultRule(bad)


def moto_step(step_id, state="PENDING"):
    return {"Id": step_id, "Status": {"State": state, "Timeline": {"CreationDateTime": 100.0}}}


def test_step_rewrites():
    steps = Steps()
    steps.outcomes["s-1"] = StepOutcome(
        {"step_id": "s-1", "state": "FAILED", "failure": {"LogFile": "s3://b/l/stderr.gz"}}
    )
    steps.outcomes["s-2"] = StepOutcome({"step_id": "s-2", "state": "COMPLETED", "after_polls": 1})
    step = moto_step("s-1", "RUNNING")
    steps.rewrite(step, count_poll=True)
    status = step["Status"]
    assert status["State"] == "FAILED"
    assert status["FailureDetails"] == {"LogFile": "s3://b/l/stderr.gz", "Reason": "Unknown Error."}
    assert status["Timeline"]["StartDateTime"] == 100.0
    end = status["Timeline"]["EndDateTime"]
    again = moto_step("s-1", "RUNNING")
    steps.rewrite(again, count_poll=True)
    assert again["Status"]["Timeline"]["EndDateTime"] == end  # stable

    listed = moto_step("s-2")
    steps.rewrite(listed, count_poll=False)  # ListSteps does not count as a poll
    assert listed["Status"]["State"] == "RUNNING"
    states = []
    for _ in range(2):
        polled = moto_step("s-2")
        steps.rewrite(polled, count_poll=True)
        states.append(polled["Status"]["State"])
    assert states == ["RUNNING", "COMPLETED"]

    untouched = moto_step("s-3")
    steps.rewrite(untouched, count_poll=True)
    assert untouched == moto_step("s-3")

    assert steps.cancel(["s-3", "s-1"]) == [
        {"StepId": "s-3", "Status": "SUBMITTED", "Reason": ""},
        {
            "StepId": "s-1",
            "Status": "FAILED",
            "Reason": "Step s-1 is in FAILED state and cannot be cancelled.",
        },
    ]
    cancelled = moto_step("s-3")
    steps.rewrite(cancelled, count_poll=True)
    assert cancelled["Status"]["State"] == "CANCELLED"
    assert "EndDateTime" in cancelled["Status"]["Timeline"]


def test_step_outcome_validation():
    for bad in (
        {"state": "COMPLETED"},
        {"step_id": "s-1", "state": "DONE"},
        {"step_id": "s-1", "state": "FAILED", "failure": "x"},
        {"step_id": "s-1", "state": "RUNNING", "after_polls": -1},
    ):
        with pytest.raises(CommandError):
            StepOutcome(bad)
