"""The segment worker: the part of ddbnb that ships inside the Lambda package.

Everything here imports only the standard library, boto3/botocore,
``ddbnb.exceptions`` and this folder (checked by ``make lint``'s import
contracts), and both engines run exactly this code.
"""
