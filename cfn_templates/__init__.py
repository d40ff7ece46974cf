"""CloudFormation templates, one per stack; shipped as package data."""
