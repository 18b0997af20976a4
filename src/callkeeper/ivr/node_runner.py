"""What the IVR node does with its interpreter's output: prompts, recordings and collects for
the io layer, checkpoint saves and deletes for the store, a transfer (REFER), a hang-up (BYE),
and the end of a call.

One job: turning `ivr.commands` into `node_commands`, and the call's end. Checkpoints are
written inside an `Envelope` naming the script and the owner (node/call), so a node deletes
only what it wrote. Kept apart from node_calls.py, which gets a session started; this is the
session running.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callkeeper.ivr import commands as ic
from callkeeper.ivr import events as ie
from callkeeper.ivr import node_commands as nc
from callkeeper.ivr import node_registration
from callkeeper.ivr.envelope import Envelope, encode_envelope
from callkeeper.ivr.node_model import IvrCall
from callkeeper.sip.dialog import DialogState

if TYPE_CHECKING:
    from callkeeper.ivr.node import IvrNode


def drain_runner(node: IvrNode, call: IvrCall, now: float) -> None:
    runner = call.runner
    if runner is None:
        return
    if call.pending_digits:
        digits, call.pending_digits = call.pending_digits, []
        for digit in digits:
            runner.digit(digit, now)
    while True:
        event = runner.next_event()
        if event is not None:
            report(node, call, event)
            continue
        command = runner.next_command()
        if command is None:
            break
        run(node, call, command, now)
        if call.ended:
            # a Hangup ends the call; the session's DiscardCheckpoint follows it
            while (command := runner.next_command()) is not None:
                if isinstance(command, ic.DiscardCheckpoint):
                    run(node, call, command, now)
            while (event := runner.next_event()) is not None:
                report(node, call, event)
            break


def report(node: IvrNode, call: IvrCall, event: ie.IvrEvent) -> None:
    session = event.session_id
    if isinstance(event, ie.StepEntered):
        call.step = event.step
        node.events.append(nc.StepEntered(call.id, session, event.step, event.kind, event.resumed))
    elif isinstance(event, ie.DigitsCollected):
        node.events.append(
            nc.DigitsCollected(call.id, session, event.step, event.variable, event.value)
        )
    elif isinstance(event, ie.CollectFailed):
        node.events.append(
            nc.CollectFailed(call.id, session, event.step, event.cause, event.retries_left)
        )
    elif isinstance(event, ie.SessionEnded):
        node.events.append(
            nc.SessionEnded(
                call.id, session, event.reason, dict(event.variables), event.transfer_target
            )
        )


def run(node: IvrNode, call: IvrCall, command: ic.IvrCommand, now: float) -> None:
    if isinstance(command, ic.PlayPrompt):
        node.commands.append(
            nc.PlayPrompt(call.id, command.name, command.file, command.from_offset)
        )
    elif isinstance(command, ic.StopPrompt):
        node.commands.append(nc.StopPrompt(call.id))
    elif isinstance(command, ic.StartCollect):
        session = call.session or ""
        node.events.append(nc.CollectStarted(call.id, session, command.step, command.digits))
    elif isinstance(command, ic.Checkpoint):
        envelope = Envelope(
            script=node.script.name,
            owner=owner(node, call),
            node=node.settings.node,
            step=command.step,
            data=command.data,
        )
        node.commands.append(nc.SaveCheckpoint(command.session_id, encode_envelope(envelope)))
    elif isinstance(command, ic.DiscardCheckpoint):
        node.commands.append(nc.DeleteCheckpoint(command.session_id, owner(node, call)))
    elif isinstance(command, ic.Transfer):
        transfer(node, call, command.target, now)
    elif isinstance(command, ic.Hangup):
        hang_up(node, call, now, command.reason, delete=False)
    elif isinstance(command, ic.StartRecord):
        node.commands.append(nc.StartRecord(call.id, command.file, command.max_seconds))
    else:
        assert isinstance(command, ic.StopRecord)
        node.commands.append(nc.StopRecord(call.id))


def owner(node: IvrNode, call: IvrCall) -> str:
    return f"{node.settings.node}/{call.id}"


def transfer(node: IvrNode, call: IvrCall, target: str, now: float) -> None:
    """Blind transfer through the call manager: REFER in the dialog (RFC 3515); the call
    manager rings the target and then BYEs us."""
    node.commands.append(nc.StopPrompt(call.id))
    if call.dialog.state is not DialogState.CONFIRMED:
        call.dialog.state = DialogState.CONFIRMED  # our 2xx is out; the ACK may lag
    if target.startswith(("sip:", "sips:", "tel:")):
        refer_to = f"<{target}>"
    else:
        refer_to = f"<sip:{target}@{node.settings.domain}>"
    request = call.dialog.create_request(
        "REFER",
        node_registration.via(node),
        headers=(
            ("Refer-To", refer_to),
            ("Referred-By", f"<{node_registration.contact_uri(node)}>"),
        ),
    )
    transaction = node.endpoint.send_request(request, call.flow, now)
    node.requests[transaction] = ("refer", call.id)


def hang_up(node: IvrNode, call: IvrCall, now: float, reason: str, *, delete: bool) -> None:
    if call.ended:
        return
    if call.dialog.state is not DialogState.TERMINATED:
        if call.dialog.state is DialogState.EARLY and call.answer is None:
            node.respond(call.invite, call.invite_transaction, 480, now=now)
        else:
            if call.dialog.state is DialogState.EARLY:
                call.dialog.state = DialogState.CONFIRMED
            bye = call.dialog.create_request("BYE", node_registration.via(node))
            transaction = node.endpoint.send_request(bye, call.flow, now)
            node.requests[transaction] = ("bye", call.id)
    end(node, call, now, reason, delete=delete)


def end(node: IvrNode, call: IvrCall, now: float, reason: str, *, delete: bool) -> None:
    if call.ended:
        return
    call.ended = True
    if call.dialog.state is not DialogState.TERMINATED:
        call.dialog.terminate()
    node.timers.cancel(("2xx", call.id))
    runner = call.runner
    if delete and runner is not None and not runner.finished:
        runner.hangup(now)  # the interpreter discards the checkpoint and reports the end
        while (command := runner.next_command()) is not None:
            if isinstance(command, ic.DiscardCheckpoint):
                node.commands.append(nc.DeleteCheckpoint(command.session_id, owner(node, call)))
        while (event := runner.next_event()) is not None:
            report(node, call, event)
    call.runner = None
    node.commands.append(nc.CloseMedia(call.id))
    node.events.append(nc.CallEnded(call.id, reason))
    del node.calls[call.id]
