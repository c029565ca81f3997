"""Who may read or write what, as NimBLE decides it: attribute permissions for the
firmware's characteristic flags, the CCCD's inherited security, a link's security
state and the ATT error an access gets."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from host_tools.vboard.wire import (
    F_AUX_WRITE,
    F_READ,
    F_READ_AUTHEN,
    F_READ_ENC,
    F_WRITE,
    F_WRITE_AUTHEN,
    F_WRITE_ENC,
    F_WRITE_NR,
)

# ATT errors NimBLE's ble_att_svr_check_perms answers
ATT_INSUFFICIENT_AUTHEN, ATT_INSUFFICIENT_ENC = 0x05, 0x0F


def permissions_for(flags: int):
    """bumble attribute permissions for MicroPython characteristic flags: readable
    and writeable only. The security flags are checked by the bridge itself, as
    NimBLE does (``security_error``): bumble counts every encrypted LE link as
    authenticated, NimBLE only one whose key was made with MITM protection."""
    from bumble.att import Attribute

    P = Attribute.Permissions
    perms = P(0)
    if flags & F_READ:
        perms |= P.READABLE
    if flags & (F_WRITE | F_WRITE_NR | F_AUX_WRITE):
        perms |= P.WRITEABLE
    return perms


def cccd_flags(flags: int) -> int:
    """The security flags of a characteristic's CCCD: writing it switches the
    notifications on, so it asks what the characteristic asks (NimBLE ble_gatts.c
    ble_gatts_register_clt_cfg_dsc: encryption and authentication are inherited,
    authorisation is not)."""
    out = F_READ | F_WRITE
    if flags & (F_READ_ENC | F_WRITE_ENC):
        out |= F_WRITE_ENC
    if flags & (F_READ_AUTHEN | F_WRITE_AUTHEN):
        out |= F_WRITE_AUTHEN
    return out


@dataclass
class LinkSecurity:
    """A connection's security state as NimBLE keeps it (struct ble_gap_sec_state)."""

    encrypted: bool = False
    authenticated: bool = False
    bonded: bool = False
    key_size: int = 0
    pairing: bool = False  # a pairing is under way (its encryption is not reported yet)
    restore_authenticated: bool = False  # the stored key this link asked for
    # cleared while a finished pairing's keys go to the firmware: NimBLE stores them
    # and reports the encryption before it handles the next ATT request
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.settled.set()


def security_error(flags: int, is_read: bool, sec: LinkSecurity, has_ltk: bool) -> int:
    """The ATT error NimBLE answers for this access, 0 when it is allowed
    (ble_att_svr_check_perms, BLE_SM_SC_ONLY off). Read/write permission itself is
    checked before. has_ltk: the store holds an LTK for the peer, which makes an
    unencrypted access "insufficient encryption" (re-encrypt) rather than
    "insufficient authentication" (pair)."""
    enc = flags & (F_READ_ENC if is_read else F_WRITE_ENC)
    authen = flags & (F_READ_AUTHEN if is_read else F_WRITE_AUTHEN)
    if (enc or authen) and not sec.encrypted:
        return ATT_INSUFFICIENT_ENC if has_ltk else ATT_INSUFFICIENT_AUTHEN
    if authen and not sec.authenticated:
        return ATT_INSUFFICIENT_AUTHEN
    return 0
