/* The senior-facing kiosk page's script (inlined, CSP by hash).
   One poll at a time, every data-poll ms. A result is shown for hold_s (show_seconds, or longer: a long
   sentence, a confirmation waiting for staff) from when the daemon published it (age_s), so a reload never
   brings back an old one. Each new sequence number is spoken once (its speech: amounts and times in words; a
   repeated hint not at all); a result already there when the page loads is not (the page spoke it before
   the reload). seq 0 means the daemon
   (re)started: its first decision is seq 1 again. A new result cuts the previous speech short (Chrome drops
   a speak() right after cancel(), hence the short wait); the rate is a little slower than normal. */
(function(){
var b=document.body,nameEl=document.getElementById('name'),payEl=document.getElementById('pay'),
msgEl=document.getElementById('msg');
function attr(k){return b.getAttribute('data-'+k);}
var SHOW=parseFloat(attr('show'))*1000,SPEAK=attr('speak')==='1',VOICE=attr('voice'),PAY=attr('pay'),
IDLE=attr('idle'),OFF=attr('offline'),POLL=parseInt(attr('poll'),10),LOST=parseInt(attr('lost'),10),
RATE=parseFloat(attr('rate'))||0.9;
var TONE={meal:'meal',repeat:'repeat',confirm:'confirm',closer:'hint',turn:'hint',fault:'fault'};
var shown=-1,spoken=-1,timer=0,lastOk=Date.now(),first=true;
function set(tone,name,pay,msg){b.className=tone;nameEl.textContent=name||'';payEl.textContent=pay||'';
msgEl.textContent=msg||'';}
function idle(){clearTimeout(timer);set('idle','','',IDLE);}
function say(text){
var s=window.speechSynthesis;
if(!SPEAK||!text||!s||!window.SpeechSynthesisUtterance){return;}
try{var busy=s.speaking||s.pending;if(busy){s.cancel();}
setTimeout(function(){try{var u=new SpeechSynthesisUtterance(text);u.lang=VOICE;u.rate=RATE;
var vs=s.getVoices()||[];
for(var i=0;i<vs.length;i++){if((vs[i].lang||'').replace('_','-')===VOICE){u.voice=vs[i];break;}}
s.speak(u);}catch(e){}},busy?100:0);}catch(e){}}
function show(d){
var left=(d.hold_s?d.hold_s*1000:SHOW)-(d.age_s||0)*1000;
if(d.kind==='idle'||left<=0){idle();return false;}
clearTimeout(timer);
var pay=d.kind==='meal'?PAY.replace('{yuan}',(d.payable_fen/100).toFixed(2)):'';
set(TONE[d.kind]||'calm',d.name,pay,d.message);
timer=setTimeout(idle,left);
return true;}
function got(d){
lastOk=Date.now();
if(d.seq===0){spoken=0;}
if(first){spoken=d.seq;first=false;}
if(d.seq!==shown){shown=d.seq;if(show(d)&&d.seq!==spoken){spoken=d.seq;if(d.speak!==false){
say(d.speech||d.message);}}}}
function lost(){if(Date.now()-lastOk>LOST&&shown!==-2){clearTimeout(timer);shown=-2;set('offline','','',OFF);}}
function poll(){
fetch('/api/latest',{cache:'no-store'}).then(function(r){if(!r.ok){throw new Error(r.status);}return r.json();})
.then(got,lost).then(function(){setTimeout(poll,POLL);},function(){setTimeout(poll,POLL);});}
poll();
})();
