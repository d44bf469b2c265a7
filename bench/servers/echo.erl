%% The seed's platform: an Erlang/OTP echo server on gen_tcp with {packet, 4},
%% one process per connection, as proc_socket_server runs them.
-module(echo).
-export([main/0]).

main() ->
    {ok, Listen} = gen_tcp:listen(0, [binary, {packet, 4}, {active, false},
                                      {reuseaddr, true}, {nodelay, true},
                                      {backlog, 4096}, {ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(Listen),
    io:format("PORT ~p~n", [Port]),
    accept(Listen).

accept(Listen) ->
    {ok, Socket} = gen_tcp:accept(Listen),
    Pid = spawn(fun() -> receive go -> loop(Socket) end end),
    ok = gen_tcp:controlling_process(Socket, Pid),
    Pid ! go,
    accept(Listen).

loop(Socket) ->
    case gen_tcp:recv(Socket, 0) of
        {ok, Packet} -> ok = gen_tcp:send(Socket, Packet), loop(Socket);
        {error, _} -> gen_tcp:close(Socket)
    end.
