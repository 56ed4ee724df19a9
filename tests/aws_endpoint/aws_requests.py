"""What an AWS request is: its service, operation, IAM action(s) and resource.

Pure functions over a request's method, path, query and headers, so that
they can be tested without a server. `identify` is the entry point.

Services are named by their SigV4 signing name (the fourth field of the
`Credential=AKID/DATE/REGION/SERVICE/aws4_request` scope): `s3`,
`elasticmapreduce`, `glue`, `athena`, `emr-serverless`, `states`,
`cloudformation`, `lambda`, `iam`. The IAM action prefix is the same name
for all of them.
"""

import json
import re
import urllib.parse
import xml.etree.ElementTree as ET

# X-Amz-Target prefixes of the JSON-protocol services, for requests whose
# signing scope is missing (unsigned): the target alone then names them.
TARGET_PREFIXES = {
    "AWSGlue": "glue",
    "AmazonAthena": "athena",
    "ElasticMapReduce": "elasticmapreduce",
    "AWSStepFunctions": "states",
}

# The services spoken in JSON (the body is kept in the request log).
JSON_SERVICES = {"glue", "athena", "elasticmapreduce", "emr-serverless", "states", "lambda"}

# The services of the query protocol: a form-urlencoded body (or query
# string) whose `Action` names the operation; the form is kept in the log.
QUERY_SERVICES = {"cloudformation", "iam"}

# The services whose body the request log keeps.
LOGGED_BODY_SERVICES = JSON_SERVICES | QUERY_SERVICES

# S3 sub-resources (query keys) of a bucket: method -> (operation, IAM action).
# The IAM names are those of the Service Authorization Reference, which
# differ from the operation names for several of them.
S3_BUCKET_SUBRESOURCES = {
    "location": {"GET": ("GetBucketLocation", "GetBucketLocation")},
    "uploads": {"GET": ("ListMultipartUploads", "ListBucketMultipartUploads")},
    "versions": {"GET": ("ListObjectVersions", "ListBucketVersions")},
    "versioning": {
        "GET": ("GetBucketVersioning", "GetBucketVersioning"),
        "PUT": ("PutBucketVersioning", "PutBucketVersioning"),
    },
    "policy": {
        "GET": ("GetBucketPolicy", "GetBucketPolicy"),
        "PUT": ("PutBucketPolicy", "PutBucketPolicy"),
        "DELETE": ("DeleteBucketPolicy", "DeleteBucketPolicy"),
    },
    "tagging": {
        "GET": ("GetBucketTagging", "GetBucketTagging"),
        "PUT": ("PutBucketTagging", "PutBucketTagging"),
        "DELETE": ("DeleteBucketTagging", "PutBucketTagging"),
    },
    "acl": {
        "GET": ("GetBucketAcl", "GetBucketAcl"),
        "PUT": ("PutBucketAcl", "PutBucketAcl"),
    },
    "encryption": {
        "GET": ("GetBucketEncryption", "GetEncryptionConfiguration"),
        "PUT": ("PutBucketEncryption", "PutEncryptionConfiguration"),
        "DELETE": ("DeleteBucketEncryption", "PutEncryptionConfiguration"),
    },
    "lifecycle": {
        "GET": ("GetBucketLifecycleConfiguration", "GetLifecycleConfiguration"),
        "PUT": ("PutBucketLifecycleConfiguration", "PutLifecycleConfiguration"),
        "DELETE": ("DeleteBucketLifecycle", "PutLifecycleConfiguration"),
    },
    "notification": {
        "GET": ("GetBucketNotificationConfiguration", "GetBucketNotification"),
        "PUT": ("PutBucketNotificationConfiguration", "PutBucketNotification"),
    },
    "cors": {
        "GET": ("GetBucketCors", "GetBucketCORS"),
        "PUT": ("PutBucketCors", "PutBucketCORS"),
        "DELETE": ("DeleteBucketCors", "PutBucketCORS"),
    },
    "publicAccessBlock": {
        "GET": ("GetPublicAccessBlock", "GetBucketPublicAccessBlock"),
        "PUT": ("PutPublicAccessBlock", "PutBucketPublicAccessBlock"),
        "DELETE": ("DeletePublicAccessBlock", "PutBucketPublicAccessBlock"),
    },
    "object-lock": {
        "GET": ("GetObjectLockConfiguration", "GetBucketObjectLockConfiguration"),
        "PUT": ("PutObjectLockConfiguration", "PutBucketObjectLockConfiguration"),
    },
    "delete": {"POST": ("DeleteObjects", "DeleteObject")},
}

# S3 sub-resources of an object (uploadId is handled apart).
S3_OBJECT_SUBRESOURCES = {
    "uploads": {"POST": ("CreateMultipartUpload", "PutObject")},
    "attributes": {"GET": ("GetObjectAttributes", "GetObjectAttributes")},
    "tagging": {
        "GET": ("GetObjectTagging", "GetObjectTagging"),
        "PUT": ("PutObjectTagging", "PutObjectTagging"),
        "DELETE": ("DeleteObjectTagging", "DeleteObjectTagging"),
    },
    "acl": {
        "GET": ("GetObjectAcl", "GetObjectAcl"),
        "PUT": ("PutObjectAcl", "PutObjectAcl"),
    },
    "retention": {
        "GET": ("GetObjectRetention", "GetObjectRetention"),
        "PUT": ("PutObjectRetention", "PutObjectRetention"),
    },
    "legal-hold": {
        "GET": ("GetObjectLegalHold", "GetObjectLegalHold"),
        "PUT": ("PutObjectLegalHold", "PutObjectLegalHold"),
    },
    "restore": {"POST": ("RestoreObject", "RestoreObject")},
    "select": {"POST": ("SelectObjectContent", "GetObject")},
}

# EMR Serverless (REST-JSON): (method, path pattern, operation), first match wins.
EMR_SERVERLESS_ROUTES = [
    (method, re.compile(pattern), operation)
    for method, pattern, operation in [
        ("POST", r"^/applications/?$", "CreateApplication"),
        ("GET", r"^/applications/?$", "ListApplications"),
        ("GET", r"^/applications/[^/]+/?$", "GetApplication"),
        ("PATCH", r"^/applications/[^/]+/?$", "UpdateApplication"),
        ("DELETE", r"^/applications/[^/]+/?$", "DeleteApplication"),
        ("POST", r"^/applications/[^/]+/start/?$", "StartApplication"),
        ("POST", r"^/applications/[^/]+/stop/?$", "StopApplication"),
        ("POST", r"^/applications/[^/]+/jobruns/?$", "StartJobRun"),
        ("GET", r"^/applications/[^/]+/jobruns/?$", "ListJobRuns"),
        ("GET", r"^/applications/[^/]+/jobruns/[^/]+/?$", "GetJobRun"),
        ("DELETE", r"^/applications/[^/]+/jobruns/[^/]+/?$", "CancelJobRun"),
        ("GET", r"^/applications/[^/]+/jobruns/[^/]+/dashboard/?$", "GetDashboardForJobRun"),
        ("GET", r"^/applications/[^/]+/jobruns/[^/]+/attempts/?$", "ListJobRunAttempts"),
        ("GET", r"^/tags/.+$", "ListTagsForResource"),
        ("POST", r"^/tags/.+$", "TagResource"),
        ("DELETE", r"^/tags/.+$", "UntagResource"),
    ]
]


# Lambda (REST-JSON): (method, path pattern, operation), first match wins.
# Approximate: the paths the engine and the tests use, not the whole API.
LAMBDA_ROUTES = [
    (method, re.compile(pattern), operation)
    for method, pattern, operation in [
        ("POST", r"^/2015-03-31/functions/?$", "CreateFunction"),
        ("GET", r"^/2015-03-31/functions/?$", "ListFunctions"),
        ("GET", r"^/2015-03-31/functions/[^/]+/?$", "GetFunction"),
        ("DELETE", r"^/2015-03-31/functions/[^/]+/?$", "DeleteFunction"),
        ("GET", r"^/2015-03-31/functions/[^/]+/configuration/?$", "GetFunctionConfiguration"),
        ("PUT", r"^/2015-03-31/functions/[^/]+/configuration/?$", "UpdateFunctionConfiguration"),
        ("PUT", r"^/2015-03-31/functions/[^/]+/code/?$", "UpdateFunctionCode"),
        ("POST", r"^/2015-03-31/functions/[^/]+/invocations/?$", "Invoke"),
        ("POST", r"^/2015-03-31/functions/[^/]+/versions/?$", "PublishVersion"),
        ("GET", r"^/2015-03-31/functions/[^/]+/versions/?$", "ListVersionsByFunction"),
        ("POST", r"^/2015-03-31/functions/[^/]+/aliases/?$", "CreateAlias"),
        ("GET", r"^/2015-03-31/functions/[^/]+/aliases/?$", "ListAliases"),
        ("GET", r"^/2015-03-31/functions/[^/]+/aliases/[^/]+/?$", "GetAlias"),
        ("PUT", r"^/2015-03-31/functions/[^/]+/aliases/[^/]+/?$", "UpdateAlias"),
        ("DELETE", r"^/2015-03-31/functions/[^/]+/aliases/[^/]+/?$", "DeleteAlias"),
        ("POST", r"^/2015-03-31/functions/[^/]+/policy/?$", "AddPermission"),
        ("GET", r"^/2015-03-31/functions/[^/]+/policy/?$", "GetPolicy"),
        ("DELETE", r"^/2015-03-31/functions/[^/]+/policy/[^/]+/?$", "RemovePermission"),
        ("GET", r"^/2017-03-31/tags/.+$", "ListTags"),
        ("POST", r"^/2017-03-31/tags/.+$", "TagResource"),
        ("DELETE", r"^/2017-03-31/tags/.+$", "UntagResource"),
    ]
]


def credential_scope(headers, query):
    """(akid, region, service) from the SigV4 credential scope, or Nones.

    The scope is in the Authorization header, or in X-Amz-Credential for a
    presigned URL."""
    auth = headers.get("Authorization") or ""
    match = re.search(r"Credential=([^,\s]+)", auth)
    credential = match.group(1) if match else (query.get("X-Amz-Credential") or [""])[0]
    parts = credential.split("/")
    if len(parts) >= 5 and parts[-1] == "aws4_request":
        return "/".join(parts[:-4]), parts[-3], parts[-2].lower()
    return None, None, None


def s3_arn(bucket, key=None):
    if key is None:
        return f"arn:aws:s3:::{bucket}"
    return f"arn:aws:s3:::{bucket}/{key}"


def parse_copy_source(value):
    """(bucket, key) of an `x-amz-copy-source` header (`/bucket/key?versionId=..`)."""
    value = value.split("?", 1)[0]
    value = urllib.parse.unquote(value).lstrip("/")
    bucket, _, key = value.partition("/")
    return bucket, key


def delete_objects_keys(body):
    """The keys a DeleteObjects body names, or None when it does not parse."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    keys = []
    for element in root.iter():
        if element.tag == "Key" or element.tag.endswith("}Key"):
            keys.append(element.text or "")
    return keys


def identify_s3(method, path, query, headers, body):
    """Operation, bucket, key and IAM requirements of a path-style S3 request.

    Requirements are (action, resource ARN) pairs that must all be allowed:
    CopyObject needs s3:GetObject on its source too, DeleteObjects
    s3:DeleteObject on every key it names."""
    parts = path.lstrip("/").split("/", 1)
    bucket = urllib.parse.unquote(parts[0]) if parts[0] else None
    key = urllib.parse.unquote(parts[1]) if len(parts) > 1 and parts[1] != "" else None
    result = {"bucket": bucket, "key": key}

    if bucket is None:
        if method == "GET":
            operation, action = "ListBuckets", "ListAllMyBuckets"
        else:
            operation, action = f"{method} /", f"{method} /"
        result.update(
            operation=operation, requirements=[(f"s3:{action}", "arn:aws:s3:::*")], resource=None
        )
        return result

    if key is None:
        operation = action = None
        for name, by_method in S3_BUCKET_SUBRESOURCES.items():
            if name in query and method in by_method:
                operation, action = by_method[method]
                break
        if operation is None:
            operation, action = {
                "GET": (
                    ("ListObjectsV2", "ListBucket")
                    if query.get("list-type") == ["2"]
                    else ("ListObjects", "ListBucket")
                ),
                "HEAD": ("HeadBucket", "ListBucket"),
                "PUT": ("CreateBucket", "CreateBucket"),
                "DELETE": ("DeleteBucket", "DeleteBucket"),
            }.get(method, (f"{method}Bucket", f"{method}Bucket"))
        resource = s3_arn(bucket)
        requirements = [(f"s3:{action}", resource)]
        if operation == "DeleteObjects":
            keys = delete_objects_keys(body)
            result["keys"] = keys
            if keys is None:
                requirements = [("s3:DeleteObject", s3_arn(bucket, "*"))]
            else:
                requirements = [("s3:DeleteObject", s3_arn(bucket, k)) for k in keys]
        result.update(operation=operation, requirements=requirements, resource=resource)
        return result

    resource = s3_arn(bucket, key)
    copy_source = headers.get("x-amz-copy-source")
    versioned = "versionId" in query
    operation = action = None
    if "uploadId" in query:
        operation, action = {
            "PUT": ("UploadPartCopy" if copy_source else "UploadPart", "PutObject"),
            "POST": ("CompleteMultipartUpload", "PutObject"),
            "DELETE": ("AbortMultipartUpload", "AbortMultipartUpload"),
            "GET": ("ListParts", "ListMultipartUploadParts"),
        }.get(method, (None, None))
    if operation is None:
        for name, by_method in S3_OBJECT_SUBRESOURCES.items():
            if name in query and method in by_method:
                operation, action = by_method[method]
                break
    if operation is None:
        operation, action = {
            "GET": ("GetObject", "GetObjectVersion" if versioned else "GetObject"),
            "HEAD": ("HeadObject", "GetObjectVersion" if versioned else "GetObject"),
            "PUT": ("CopyObject" if copy_source else "PutObject", "PutObject"),
            "DELETE": ("DeleteObject", "DeleteObjectVersion" if versioned else "DeleteObject"),
        }.get(method, (f"{method}Object", f"{method}Object"))
    requirements = [(f"s3:{action}", resource)]
    if copy_source and operation in ("CopyObject", "UploadPartCopy"):
        source_bucket, source_key = parse_copy_source(copy_source)
        result["copy_source"] = {"bucket": source_bucket, "key": source_key}
        requirements.append(("s3:GetObject", s3_arn(source_bucket, source_key)))
    result.update(operation=operation, requirements=requirements, resource=resource)
    return result


def identify(method, raw_path, headers, body):
    """Everything the proxy needs to know about one request, as a dict:
    service, region, akid, operation, action (the first IAM requirement),
    requirements [(action, resource or None)], and for S3 bucket, key and
    resource (the ARN). Unknown requests get service/operation None."""
    path, _, query_string = raw_path.partition("?")
    query = urllib.parse.parse_qs(query_string, keep_blank_values=True)
    akid, region, service = credential_scope(headers, query)
    target = headers.get("X-Amz-Target")
    if service is None and target:
        service = TARGET_PREFIXES.get(target.split(".", 1)[0])
    info = {
        "service": service,
        "region": region,
        "akid": akid,
        "operation": None,
        "action": None,
        "requirements": [],
        "bucket": None,
        "key": None,
        "resource": None,
    }
    if path.startswith("/moto-api/"):
        info.update(service="moto-api", operation=path)
        return info
    if service is None:
        return info
    if service == "s3":
        info.update(identify_s3(method, path, query, headers, body))
    elif target and "." in target:
        info["operation"] = target.rsplit(".", 1)[1]
    elif service in QUERY_SERVICES:
        action = query_form(query_string, body).get("Action")
        info["operation"] = action or None
    elif service in ("emr-serverless", "lambda"):
        routes = EMR_SERVERLESS_ROUTES if service == "emr-serverless" else LAMBDA_ROUTES
        for route_method, pattern, operation in routes:
            if method == route_method and pattern.match(path):
                info["operation"] = operation
                break
    if info["operation"] and not info["requirements"]:
        info["requirements"] = [(f"{service}:{info['operation']}", None)]
    if info["requirements"]:
        info["action"] = info["requirements"][0][0]
    return info


def json_body(body):
    """A request body as JSON, or None (empty or not JSON)."""
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def query_form(query_string, body):
    """The fields of a query-protocol request (its query string, then its
    form-urlencoded body) as a dict of strings."""
    form = dict(urllib.parse.parse_qsl(query_string, keep_blank_values=True))
    if body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        form.update(urllib.parse.parse_qsl(text, keep_blank_values=True))
    return form


def _elide_zip(doc):
    """A Lambda body with its `ZipFile` (base64 code) replaced by its length."""
    if not isinstance(doc, dict):
        return doc
    doc = dict(doc)
    if isinstance(doc.get("ZipFile"), str):
        doc["ZipFile"] = f"<{len(doc['ZipFile'])} base64 characters>"
    if isinstance(doc.get("Code"), dict):
        doc["Code"] = _elide_zip(doc["Code"])
    return doc


def logged_body(service, raw_path, body):
    """What the request log keeps of a request's body: the JSON of the JSON
    services (None if empty or not JSON; Lambda's code zip elided), the
    form of the query-protocol ones."""
    if service in QUERY_SERVICES:
        return query_form(raw_path.partition("?")[2], body)
    doc = json_body(body)
    if service == "lambda":
        doc = _elide_zip(doc)
    return doc
