"""The sigv4 plugin: scripts sign proxied requests for AWS and S3-compatible services and presign URLs.

Helpers (all C, in native/sigv4): ``zs_aws_sign_request`` signs the request
a script is about to proxy with the configured credentials;
``zs_aws_v4_authorization_header`` and ``zs_aws_v4_presigned_url`` take the
original server's 144-byte parameter block (empty keys in it select the
configured credentials for presigning). Credentials are resolved at every
world build (start-up and reload) by ``credentials.resolve``.
"""

import logging

from zeroserve.plugins.sigv4.credentials import resolve
from zeroserve.plugins.sigv4.signing import c_credentials, helper_functions
from zeroserve.sdk import HelperSpec, hookimpl

log = logging.getLogger("zeroserve.sigv4")

def _profile(config):
    return getattr(config.options, "aws_profile", None)


@hookimpl
def zeroserve_add_options(parser):
    parser.add_argument("--aws-profile", metavar="NAME", default=None,
                        help="sign with this profile of ~/.aws/credentials or ~/.aws/config instead of "
                             "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE")


@hookimpl
def zeroserve_configure(config):
    resolve(_profile(config))  # a named profile without keys stops the start-up here


@hookimpl
def zeroserve_register_helpers(config):
    credentials = resolve(_profile(config))
    if credentials is None:
        log.warning("sigv4: no AWS credentials found (environment, shared credentials or config file); "
                    "zs_aws_sign_request will answer -1")
    else:
        log.info("sigv4: signing with AWS credentials from %s", credentials.source)
    # The world's helper table keeps the cookie alive as long as the programs that use it.
    cookie = c_credentials(credentials)
    return [HelperSpec(name, c_function=function, c_cookie=cookie) for name, function in helper_functions().items()]


@hookimpl
def zeroserve_known_helpers():
    return list(helper_functions())
