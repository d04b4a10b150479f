"""The sandbox that stands in for AWS (DynamoDB Local and a moto server), and the demo data to fill it."""
