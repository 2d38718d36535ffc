"""A LiveKit voice agent with a Vivify face, for a real LiveKit deployment.

Two processes (docs/integrations.md):

    vivify serve --token "$VIVIFY_TOKEN"                      # the avatar engines
    LIVEKIT_URL=wss://… LIVEKIT_API_KEY=… LIVEKIT_API_SECRET=… \\
    VIVIFY_URL=http://127.0.0.1:8080 VIVIFY_TOKEN=… \\
        python examples/livekit_avatar.py dev                 # the agent (livekit-agents CLI)

Then open a room with the agent (LiveKit's Agents Playground, or any client): the agent hears
you, and answers through a Vivify avatar participant that publishes the face and the voice on
the agent's behalf. Without VIVIFY_URL the avatar runs inside this process instead (the
engines load here). VIVIFY_AVATAR picks an uploaded portrait (default: the built-in one).

STT, LLM and TTS are LiveKit Inference models (LiveKit Cloud credentials); any livekit-agents
plugins work in their place, the avatar does not care where the speech comes from.
"""

from __future__ import annotations

import logging
import os

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli, inference

from vivify.streamer.integrations.livekit_agent import VivifyAvatarSession

log = logging.getLogger("vivify-livekit-example")
server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    session: AgentSession[None] = AgentSession(
        stt=inference.STT("deepgram/nova-3"),
        llm=inference.LLM("openai/gpt-4.1-mini"),
        tts=inference.TTS("cartesia/sonic-3"),
        # An avatar cannot pause its playback: false-interruption resume must be off.
        resume_false_interruption=False,
    )
    avatar = VivifyAvatarSession(avatar=os.getenv("VIVIFY_AVATAR", "default"))
    await avatar.start(session, room=ctx.room)  # mints its token, starts it, reroutes audio
    await session.start(agent=Agent(instructions="You are a friendly, concise assistant. "
                                                 "Keep answers to a sentence or two."),
                        room=ctx.room)
    log.info("avatar %s (session %s)", avatar.avatar_identity, avatar.session_id)
    await session.generate_reply(instructions="Greet the user and offer your help.")


if __name__ == "__main__":
    cli.run_app(server)
