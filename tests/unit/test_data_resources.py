"""The environment stack keeps its data: what holds data is retained, recoverable and
private (moto cannot create the bucket's policy, so it is read from the template here)."""

from __future__ import annotations

from flotilla.adapters.templates import load_template

TEMPLATE = load_template("environment.yaml")
RESOURCES = TEMPLATE["Resources"]
DATA_TYPES = {"AWS::DynamoDB::Table", "AWS::KMS::Key", "AWS::SQS::Queue", "AWS::S3::Bucket"}


def test_every_resource_that_holds_data_is_retained_on_delete_and_replace() -> None:
    holding = {name: r for name, r in RESOURCES.items() if r["Type"] in DATA_TYPES}
    assert len(holding) == 10  # six tables, the key, two queues, the bucket
    for name, resource in holding.items():
        assert resource.get("DeletionPolicy") == "Retain", name
        assert resource.get("UpdateReplacePolicy") == "Retain", name


def test_services_revisions_and_users_can_be_recovered_to_a_point_in_time() -> None:
    for name in ("ServicesTable", "RevisionsTable", "UsersTable"):
        pitr = RESOURCES[name]["Properties"]["PointInTimeRecoverySpecification"]
        assert pitr == {"PointInTimeRecoveryEnabled": True}, name


def test_the_artifact_bucket_is_private_encrypted_versioned_and_tls_only() -> None:
    bucket = RESOURCES["ArtifactBucket"]["Properties"]
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    policy = RESOURCES["ArtifactBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "ArtifactBucket"}
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == "*"
    assert statement["Action"] == "s3:*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_both_groups_wait_for_their_instances_signals() -> None:
    scheduler = RESOURCES["SchedulerGroup"]["CreationPolicy"]["ResourceSignal"]
    assert scheduler["Count"] == {"Ref": "SchedulerCount"}
    worker = load_template("service.yaml")["Resources"]["WorkerGroup"]["CreationPolicy"]
    assert worker["ResourceSignal"]["Count"] == {"Ref": "MinSize"}


def test_ec2_notifications_of_machines_going_reach_the_events_queue_and_only_they() -> None:
    resources = TEMPLATE["Resources"]
    rule = resources["InstancesLeaving"]["Properties"]
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.ec2"]
    assert pattern["detail-type"] == ["EC2 Instance State-change Notification"]
    assert set(pattern["detail"]["state"]) == {"shutting-down", "terminated", "stopping", "stopped"}
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["EventsQueue", "Arn"]}
    policy = resources["EventsQueuePolicy"]["Properties"]
    assert policy["Queues"] == [{"Ref": "EventsQueue"}]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["InstancesLeaving", "Arn"]}}
    }
