"""One module per real thing behind a port (DynamoDB, KMS, ELB, SQS, systemd), plus in-memory ones."""
