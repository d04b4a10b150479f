"""The AWS control plane: build the Lambda package and deploy the CloudFormation stack."""
